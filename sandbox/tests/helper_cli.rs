//! The dib-helper skeleton must never pass for a working helper.

use std::process::Command;

const HELPER: &str = env!("CARGO_BIN_EXE_dib-helper");

#[test]
fn serve_says_it_is_not_there_yet() {
    let o = Command::new(HELPER)
        .args(["serve", "--socket", "/nonexistent/dib-helper.sock"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "dib-helper: error: not yet supported in this version of dib: serving clients \
         (protocol version 1) lands with issue #6\n"
    );
    assert!(!std::path::Path::new("/nonexistent/dib-helper.sock").exists());
}

#[test]
fn serve_requires_a_socket() {
    let o = Command::new(HELPER).arg("serve").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--socket <PATH>"));
}
