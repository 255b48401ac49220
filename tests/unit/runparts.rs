//! The run-parts planner against real directories and real `sort -n`.

use std::os::unix::fs::symlink;
use std::process::Command;

use crate::common::{Fixture, GOOD_SCRIPT};
use dib::runparts::{plan_dir, sort_n, Skip};

#[test]
fn real_directory_order_and_skips() {
    let f = Fixture::new();
    for name in ["10-x", "5-x", "99-b", "100-a", "10-foo.sh", "zz"] {
        f.file(&format!("d/{name}"), GOOD_SCRIPT, 0o755);
    }
    f.file("d/20-not-exec", GOOD_SCRIPT, 0o644);
    f.file("target/script", GOOD_SCRIPT, 0o755);
    symlink(f.path("target/script"), f.path("d/30-link")).unwrap();
    symlink(f.path("nowhere"), f.path("d/40-dangling")).unwrap();
    std::fs::create_dir(f.path("d/50-dir")).unwrap();

    let dib::runparts::DirPlan { run, skipped } = plan_dir(&f.path("d")).unwrap();
    let names = |v: Vec<std::path::PathBuf>| -> Vec<String> {
        v.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(run),
        ["zz", "5-x", "10-x", "30-link", "99-b", "100-a"]
    );
    let skipped: Vec<(String, Skip)> = skipped
        .into_iter()
        .map(|(p, s)| (p.file_name().unwrap().to_string_lossy().into_owned(), s))
        .collect();
    assert_eq!(
        skipped,
        [
            ("10-foo.sh".to_string(), Skip::BadName),
            ("20-not-exec".to_string(), Skip::NotExecutable),
            ("40-dangling".to_string(), Skip::NotAFile),
            ("50-dir".to_string(), Skip::NotAFile),
        ]
    );
}

#[test]
fn order_matches_gnu_sort_n() {
    let names = [
        "10-x",
        "5-x",
        "100-a",
        "99-b",
        "foo",
        "0-a",
        "007-a",
        "7-a",
        "B",
        "a",
        "_x",
        "-x",
        "-5x",
        "-10x",
        "1_a",
        "1-a",
        "01",
        "1",
        "zz",
        "Z",
        "9999999999999999999999-a",
        "10-foo",
        "10-Foo",
        "10-_",
    ];
    let out = Command::new("sort")
        .arg("-n")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(names.join("\n").as_bytes())?;
            child.wait_with_output()
        })
        .expect("running sort");
    let gnu: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    let mut ours = names.to_vec();
    ours.sort_by(|a, b| sort_n(a, b));
    assert_eq!(ours, gnu);
}
