//! dib-helper's command line: errors that need no privilege to see.

use std::process::Command;

const HELPER: &str = env!("CARGO_BIN_EXE_dib-helper");

fn stderr(args: &[&str]) -> String {
    let o = Command::new(HELPER).args(args).output().unwrap();
    assert!(!o.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_users_and_groups_are_named() {
    let e = stderr(&[
        "serve",
        "--socket",
        "/nonexistent/s",
        "--allow-user",
        "no-such-user-x",
    ]);
    assert_eq!(
        e,
        "dib-helper: error: --allow-user no-such-user-x: no such user\n"
    );
    let e = stderr(&[
        "serve",
        "--socket",
        "/nonexistent/s",
        "--allow-group",
        "no-such-group-x",
    ]);
    assert_eq!(
        e,
        "dib-helper: error: --allow-group no-such-group-x: no such group\n"
    );
}

#[test]
fn a_socket_it_cannot_create_is_an_error() {
    let e = stderr(&["serve", "--socket", "/nonexistent/dib-helper.sock"]);
    let want = if rustix::process::geteuid().is_root() {
        "dib-helper: error: the socket's directory /nonexistent: No such file or directory (os error 2)\n"
    } else {
        "dib-helper: error: dib-helper must run as root (it attaches loop devices and mounts)\n"
    };
    assert_eq!(e, want);
}

#[test]
fn systemd_mode_without_a_socket_says_so() {
    if !rustix::process::geteuid().is_root() {
        return; // the root check comes first; nothing to see here
    }
    let e = stderr(&["serve", "--systemd"]);
    assert_eq!(
        e,
        "dib-helper: error: --systemd: no socket was passed (run it from dib-helper.socket)\n"
    );
}
