//! Benchmark: resolve a synthetic tree of 1,000 elements with deep and wide
//! dependencies, in process and as a command, beside upstream DIB's
//! element-info on the same tree when `DIB_UPSTREAM_PYTHON` names a Python
//! that has diskimage-builder installed (scripts/bench-resolve sets that up).
//!
//! The tree: a chain e000 -> e001 -> ... -> e948 (depth 949), three more
//! pseudo-random edges per element (fan-out and cycles), 50 virtual names each
//! required by 19 chain elements and provided by one of p00..p49, and an OS
//! element; `top` pulls in the providers first so DIB's breadth-first walk
//! can resolve it too.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dib::element_info::env_script;
use dib::elements::{resolve, ElementSet};

const CHAIN: usize = 949;
const VIRTUALS: usize = 50;

fn write_tree(root: &Path) {
    let el = |name: &str, deps: &[String], provides: &[String]| {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("element-deps"), deps.join("\n") + "\n").unwrap();
        if !provides.is_empty() {
            fs::write(dir.join("element-provides"), provides.join("\n") + "\n").unwrap();
        }
        fs::write(dir.join("README.md"), format!("# {name}\n")).unwrap();
    };
    let e = |i: usize| format!("e{:03}", i % CHAIN);
    for i in 0..CHAIN {
        let mut deps = vec![e(i + 1), e(i * 7 + 11), e(i * 31 + 3), e(i * 101 + 57)];
        if i % 19 == 5 {
            deps.push(format!("v{:02}", (i / 19) % VIRTUALS));
        }
        deps.sort();
        deps.dedup();
        el(&e(i), &deps, &[]);
    }
    for k in 0..VIRTUALS {
        el(&format!("p{k:02}"), &[e(k * 13)], &[format!("v{k:02}")]);
    }
    el("os", &[], &["operating-system".to_string()]);
    let mut top: Vec<String> = (0..VIRTUALS).map(|k| format!("p{k:02}")).collect();
    top.push("os".into());
    top.push(e(0));
    el("top", &top, &[]);
}

struct Stats {
    min: Duration,
    median: Duration,
}

fn measure(n: usize, mut f: impl FnMut()) -> Stats {
    f(); // warm the page cache and the code
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    Stats {
        min: times[0],
        median: times[n / 2],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("elements");
    write_tree(&tree);
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let ep = tree.display().to_string();

    let set = ElementSet::discover(Some(&ep), &empty).unwrap();
    let res = resolve(&set, &["top".to_string()], "amd64").unwrap();
    let n_elements = res.elements.len();
    assert_eq!(
        n_elements,
        CHAIN + VIRTUALS + 2,
        "every element is in the closure"
    );

    let resolve_only = measure(50, || {
        resolve(&set, &["top".to_string()], "amd64").unwrap();
    });
    let full = measure(50, || {
        let set = ElementSet::discover(Some(&ep), &empty).unwrap();
        let res = resolve(&set, &["top".to_string()], "amd64").unwrap();
        std::hint::black_box(env_script(&res));
    });
    let dib_cmd = measure(20, || {
        let o = Command::new(env!("CARGO_BIN_EXE_dib"))
            .args(["element-info", "--env", "top"])
            .env("ELEMENTS_PATH", &ep)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    });

    println!("element resolution, {n_elements} elements (chain depth {CHAIN}, 4 edges each, {VIRTUALS} virtuals)");
    println!("{:<58} {:>10} {:>10}", "what", "min", "median");
    let row = |what: &str, s: &Stats| println!("{what:<58} {:>10} {:>10}", ms(s.min), ms(s.median));
    row(
        "dib, in process: resolve (elements already scanned)",
        &resolve_only,
    );
    row("dib, in process: scan + resolve + --env text", &full);
    row("dib element-info --env top (whole command)", &dib_cmd);

    match std::env::var("DIB_UPSTREAM_PYTHON") {
        Ok(python) if !python.is_empty() => {
            let upstream = measure(5, || {
                let o = Command::new(&python)
                    .args([
                        "-m",
                        "diskimage_builder.element_dependencies",
                        "--env",
                        "top",
                    ])
                    .env("ELEMENTS_PATH", &ep)
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "upstream element-info: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            });
            row(
                "DIB element-info --env top (upstream, same tree)",
                &upstream,
            );
            println!(
                "speed-up of the dib command over upstream (median): {:.1}x",
                upstream.median.as_secs_f64() / dib_cmd.median.as_secs_f64()
            );
        }
        _ => println!(
            "upstream DIB: skipped (set DIB_UPSTREAM_PYTHON, or run scripts/bench-resolve)"
        ),
    }
}
