//! Tools the shipped elements put in the hook tree, run as hooks run them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::Fixture;

fn tool(element: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("elements")
        .join(element)
        .join("bin")
        .join(name)
}

/// A static HTTP server (python3's) on a free loopback port, for `dir`.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (scripts/prepare-host installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the test HTTP server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cache_url(args: &[&str], offline: bool) -> Output {
    Command::new(tool("cache-url", "cache-url"))
        .args(args)
        .env("DIB_OFFLINE", if offline { "1" } else { "0" })
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn cache_url_fetches_revalidates_and_works_offline() {
    let f = Fixture::new();
    let served = f.file("www/file.txt", "one\n", 0o644);
    let server = Server::start(&f.path("www"));
    let url = format!("http://127.0.0.1:{}/file.txt", server.port);
    let dest = f.path("cache/sub/file.txt");
    let d = dest.display().to_string();

    let o = cache_url(&[&url, &d], false);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o), format!("cache-url: fetched {url} to {d}\n"));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "one\n");

    // Unchanged on the server: a conditional GET, nothing rewritten.
    let o = cache_url(&[&url, &d], false);
    assert_eq!(text(&o), format!("cache-url: {d} is current\n"));

    // Changed (and newer) on the server: fetched again. HTTP dates have
    // whole seconds, so the change is dated a minute on.
    std::fs::write(&served, "two\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&served)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let o = cache_url(&[&url, &d], false);
    assert_eq!(text(&o), format!("cache-url: fetched {url} to {d}\n"));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "two\n");

    // -f fetches even when current.
    let o = cache_url(&["-f", &url, &d], false);
    assert_eq!(text(&o), format!("cache-url: fetched {url} to {d}\n"));

    // Offline: the cached copy, without the server.
    drop(server);
    let o = cache_url(&[&url, &d], true);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        text(&o),
        format!("cache-url: offline: using the cached {d}\n")
    );
    let missing = f.path("cache/missing.txt").display().to_string();
    let o = cache_url(&[&url, &missing], true);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o),
        format!(
            "cache-url: offline, and {url} is not cached at {missing}: build once online first\n"
        )
    );
    // Online with the server gone: a clear failure, no partial file.
    let o = cache_url(&[&url, &missing], false);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).ends_with(&format!("cache-url: downloading {url} failed\n")),
        "{}",
        text(&o)
    );
    let left: Vec<_> = std::fs::read_dir(f.path("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn pkg_map_looks_names_up() {
    let f = Fixture::new();
    // The build's table (distribution and release of the build) ...
    f.file("maps/el", "editor\tnano\nnone\t\nmulti\ta b\n", 0o644);
    // ... and a DIB map file, read for other distributions.
    f.file(
        "el.json",
        r#"{"default": {"editor": "vim"}, "distro": {"ubuntu": {"editor": "vim-nox"}},
            "release": {"ubuntu": {"noble": {"editor": "neovim"}}}}"#,
        0o644,
    );
    let run = |args: &[&str]| {
        Command::new(tool("pkg-map", "pkg-map"))
            .args(args)
            .env("DIB_PKG_MAP_DIR", f.path("maps"))
            .env("DISTRO_NAME", "debian")
            .env("DIB_RELEASE", "bookworm")
            .output()
            .unwrap()
    };
    let o = run(&["--element", "el", "editor", "none", "multi"]);
    assert_eq!(text(&o), "nano\na b\n");
    let o = run(&["--element", "el", "--prefix", "x:", "editor"]);
    assert_eq!(text(&o), "x:nano\n");
    let o = run(&["--element", "el", "other"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o),
        "pkg-map: el has no mapping for package other (use --missing-ok to keep it)\n"
    );
    let o = run(&["--element", "el", "--missing-ok", "other"]);
    assert_eq!(text(&o), "other\n");
    let o = run(&["--element", "nope", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o),
        "pkg-map: element 'nope' has no pkg-map (/usr/share/pkg-map/nope)\n"
    );
    let o = run(&["--element", "nope", "--missing-ok", "x"]);
    assert_eq!((o.status.code(), text(&o).as_str()), (Some(0), "x\n"));
    let map = f.path("el.json").display().to_string();
    for (args, want) in [
        (vec!["--distro", "debian"], "vim\n"),
        (vec!["--distro", "ubuntu"], "vim-nox\n"),
        (vec!["--distro", "ubuntu", "--release", "noble"], "neovim\n"),
    ] {
        let mut all = vec!["--pkg-map", map.as_str()];
        all.extend(args.iter().copied());
        all.push("editor");
        let o = run(&all);
        assert_eq!(text(&o), want, "{args:?}");
    }
    let o = run(&["--element", "el", "--pkg-map", &map, "x"]);
    assert_eq!(
        (o.status.code(), text(&o).as_str()),
        (
            Some(1),
            "pkg-map: give either --element or --pkg-map, not both\n"
        )
    );
}

#[test]
fn cache_url_copies_local_files_only_when_newer() {
    let f = Fixture::new();
    let src = f.file("src/file.txt", "one\n", 0o644);
    let url = format!("file://{}", src.display());
    let dest = f.path("cache/file.txt");
    let d = dest.display().to_string();
    let o = cache_url(&[&url, &d], false);
    assert_eq!(text(&o), format!("cache-url: fetched {url} to {d}\n"));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "one\n");
    // Unchanged: the cached copy stays, with its contents.
    let o = cache_url(&[&url, &d], false);
    assert_eq!(text(&o), format!("cache-url: {d} is current\n"));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "one\n");
    // Changed (dated a minute ahead): fetched again.
    std::fs::write(&src, "two\n").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&src)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let o = cache_url(&[&url, &d], false);
    assert_eq!(text(&o), format!("cache-url: fetched {url} to {d}\n"));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "two\n");
    let missing = format!("file://{}", f.path("src/none").display());
    let o = cache_url(&[&missing, &d], false);
    assert_eq!(o.status.code(), Some(1));
}

/// `_LIB/rpm-bootstrap` run by bash: SCRIPT after sourcing it.
fn rpm_bootstrap(script: &str) -> Output {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pipeline/runtime/lib/rpm-bootstrap");
    Command::new("bash")
        .arg("-c")
        .arg(format!("set -eu; source {}; {script}", lib.display()))
        .output()
        .unwrap()
}

#[test]
fn rpm_bootstraps_name_the_missing_host_packages_and_map_architectures() {
    let o = rpm_bootstrap(
        "rpm_bootstrap_host_tools fedora-minimal bash:bash dib-no-such-dnf:dnf dib-no-such-rpm:rpm",
    );
    assert!(!o.status.success());
    assert_eq!(
        text(&o).trim(),
        "fedora-minimal: this host lacks what the bootstrap runs: install the Debian package(s) dnf rpm"
    );
    let o = rpm_bootstrap("rpm_bootstrap_host_tools opensuse-minimal bash:bash && echo all there");
    assert_eq!(text(&o).trim(), "all there");
    let o = rpm_bootstrap(
        "for a in amd64 arm64 ppc64el i386 armhf s390x; do rpm_bootstrap_arch $a; done",
    );
    assert_eq!(text(&o), "x86_64\naarch64\nppc64le\ni686\narmv7hl\ns390x\n");
    let o = rpm_bootstrap(
        "ARCH=arm64 releasever=42; rpm_bootstrap_url http://m/ 'releases/$releasever/Everything/$basearch/os/'",
    );
    assert_eq!(text(&o), "http://m/releases/42/Everything/aarch64/os/\n");
}
