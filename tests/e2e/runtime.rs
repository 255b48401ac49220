//! DIB's runtime contracts in a real Debian tree: an element's `bin/` on
//! `PATH` from pre-install.d, its `init-scripts/` installed, `pkg-map` as
//! DIB's, the base packages DIB's debian-minimal has, and `--trust-host-ca`
//! (an https download in the chroot trusts the host's CA bundle during the
//! build, and nothing of it stays in the image).

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{cache, create_cmd, extract, members, Dpkg};

/// A TLS server on the host loopback answering every GET with `body`,
/// its certificate signed by a CA made here; killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = sys.argv[3].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

fn openssl(dir: &Path, args: &[&str]) -> Result<(), Failed> {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()?;
    check(
        o.status.success(),
        format!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
    )
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it.
fn make_ca(dir: &Path) -> Result<(), Failed> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=dib test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n")?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "server.pem",
        ],
    )
}

/// Start the server; it is ready once it has printed its port (it listens
/// before printing).
fn serve(dir: &Path, body: &str) -> Result<TlsServer, Failed> {
    let mut child = Command::new("python3")
        .args(["-c", SERVER])
        .arg(dir.join("server.pem"))
        .arg(dir.join("server.key"))
        .arg(body)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let port = line
        .trim()
        .parse()
        .map_err(|_| format!("server said {line:?}"))?;
    Ok(TlsServer { child, port })
}

pub fn debian_hooks_get_dibs_runtime_and_the_hosts_cas() -> Result<(), Failed> {
    let b = Build::new();
    let pki = b.f.path("pki");
    std::fs::create_dir_all(&pki)?;
    make_ca(&pki)?;
    let server = serve(&pki, "hello over tls")?;
    let url = format!("https://127.0.0.1:{}/", server.port);
    let ca = pki.join("ca.pem").display().to_string();
    let out = b.f.path("deb");
    let o = create_cmd(
        &b,
        &cache(),
        &[
            "--trust-host-ca",
            "-t",
            "tar",
            "-o",
            &out.display().to_string(),
            "debian-minimal",
            "runtime-probe-debian",
        ],
        &[("DIB_HOST_CA_BUNDLE", &ca), ("DIB_PROBE_TLS_URL", &url)],
    )
    .output()?;
    succeeded(&o)?;
    let tarball = b.f.path("deb.tar");
    let x = b.f.path("x");
    extract(
        &tarball,
        &x,
        &[
            "./probe",
            "./var/lib/dpkg",
            "./usr/share/pkg-map",
            "./usr/local",
            "./etc/hosts",
        ],
    )?;
    let read = |p: &str| std::fs::read_to_string(x.join(p)).unwrap_or_default();
    eq(
        read("probe/bin").trim(),
        "probe-bin",
        "bin/ on PATH in pre-install.d",
    )?;
    eq(
        read("probe/pkg-map").trim(),
        "mapped=P:probe-thing-default \n\
         other_distro=probe-thing-ubuntu\n\
         by_file=probe-thing-default\n\
         missing_map_status=2",
        "pkg-map",
    )?;
    eq(
        read("probe/tls").trim(),
        "hello over tls",
        "https with the host's CAs",
    )?;
    let untrusted = read("probe/tls-untrusted");
    check(
        untrusted.contains("CERTIFICATE_VERIFY_FAILED"),
        format!("without the host's CAs the download must fail: {untrusted}"),
    )?;
    check(
        x.join("usr/share/pkg-map/runtime-probe-debian").is_file(),
        "the element's map in /usr/share/pkg-map",
    )?;
    eq(
        read("usr/local/bin/dib-init-system")
            .lines()
            .last()
            .unwrap_or(""),
        "echo systemd",
        "/usr/local/bin/dib-init-system",
    )?;
    let unit = members(
        &tarball,
        &[
            "./usr/lib/systemd/system/probe-unit.service",
            "./etc/systemd/system/multi-user.target.wants/probe-unit.service",
        ],
    )?;
    eq(
        &unit.len().to_string(),
        "2",
        &format!("init-scripts unit installed and enabled: {unit:?}"),
    )?;
    check(
        read("etc/hosts").contains("127.0.0.1\tlocalhost"),
        format!("/etc/hosts names localhost: {:?}", read("etc/hosts")),
    )?;
    let dpkg = Dpkg::of(&x);
    for pkg in ["python3", "sudo", "busybox", "gnupg"] {
        eq(
            dpkg.state(pkg)?,
            "installed",
            &format!("base package {pkg}"),
        )?;
    }
    // Nothing of the host's bundle is in the image.
    let pem = std::fs::read_to_string(&ca)?;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .take(3)
        .collect();
    let mut archive = tar::Archive::new(std::fs::File::open(&tarball)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.display().to_string();
        check(
            !path.contains("host-ca"),
            format!("the host's CA bundle in the image: {path}"),
        )?;
        if entry.header().entry_type().is_file() && entry.size() < 4 << 20 {
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            let text: String = String::from_utf8_lossy(&text)
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect();
            check(
                !text.contains(&body),
                format!("the test CA is in the image at {path}"),
            )?;
        }
    }
    b.assert_clean()
}
