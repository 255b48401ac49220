//! `--push`: a registry that does not answer stops the build before it
//! starts; the registry fixture takes an image skopeo pushes and gives
//! back its manifest; a built `-t oci` image pushed by dib is the one in
//! the registry.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use libtest_mimic::Failed;
use serde_json::json;

use crate::common::registry::Registry;
use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::images_left;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// `skopeo ARGS` with a plain environment and this build's HOME (skopeo
/// keeps a blob cache there).
fn skopeo(b: &Build, args: &[&str]) -> Result<Output, Failed> {
    let o = Command::new("skopeo")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", b.f.path("home"))
        .env("TMPDIR", &b.tmp)
        .output()
        .map_err(|e| format!("running skopeo (Debian package skopeo): {e}"))?;
    check(
        o.status.success(),
        format!(
            "skopeo {args:?} failed ({}):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
    )?;
    Ok(o)
}

/// The manifest the registry holds for `reference`, as it sends it.
fn manifest_in(b: &Build, reference: &str) -> Result<Vec<u8>, Failed> {
    let docker = format!("docker://{reference}");
    Ok(skopeo(b, &["inspect", "--raw", "--tls-verify=false", &docker])?.stdout)
}

/// Write `bytes` as a blob of the layout at `dir`: its descriptor.
fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Result<serde_json::Value, Failed> {
    let digest = dib::oci::digest_of(bytes);
    let hex = digest.trim_start_matches("sha256:");
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    fs::write(dir.join("blobs/sha256").join(hex), bytes)?;
    Ok(json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}))
}

/// A one-layer OCI image layout at `dir` (one file in a gzipped layer), tagged
/// `1`: the digest of its manifest.
fn tiny_layout(dir: &Path) -> Result<String, Failed> {
    let mut layer = tar::Builder::new(Vec::new());
    let content = b"pushed by the registry fixture\n";
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    layer.append_data(&mut h, "hello", &content[..])?;
    let layer = layer.into_inner()?;
    // Gzipped, as registries keep layers: skopeo pushes it as it is, so
    // the manifest stays byte for byte the one written here.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer)?;
    let layer_desc = blob(
        dir,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gz.finish()?,
    )?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [dib::oci::digest_of(&layer)]},
    });
    let config_desc = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config)?,
    )?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_desc,
        "layers": [layer_desc],
    });
    let mut manifest_desc = blob(dir, MANIFEST, &serde_json::to_vec(&manifest)?)?;
    manifest_desc["annotations"] = json!({"org.opencontainers.image.ref.name": "1"});
    let digest = manifest_desc["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let index = json!({"schemaVersion": 2, "manifests": [manifest_desc]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(digest)
}

pub fn a_registry_that_does_not_answer_stops_the_build_before_it_starts() -> Result<(), Failed> {
    let b = Build::new();
    let out = b.f.path("images/img").display().to_string();
    // Nothing listens on the loopback's port 1.
    let o = b
        .dib(
            &[
                "create",
                "-n",
                "-t",
                "oci",
                "--push",
                "127.0.0.1:1/x:1",
                "-o",
                &out,
                "tiny-os",
            ],
            &[],
        )
        .output()?;
    eq(&format!("{:?}", o.status.code()), "Some(1)", "exit code")?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.ends_with(
            "dib: error: cannot reach the registry 127.0.0.1:1 of --push 127.0.0.1:1/x:1: \
             connection refused; start it, or check the reference\n",
        ),
        format!("stderr:\n{err}"),
    )?;
    let left = images_left(&b)?;
    check(left.is_empty(), format!("outputs left: {left:?}"))?;
    b.assert_clean()
}

pub fn the_registry_fixture_serves_what_skopeo_pushed() -> Result<(), Failed> {
    let b = Build::new();
    let registry = Registry::start()?;
    let layout = b.f.path("layout");
    let digest = tiny_layout(&layout)?;
    let reference = format!("{}/x:1", registry.addr());
    let digestfile = b.f.path("digest");
    skopeo(
        &b,
        &[
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--digestfile",
            &digestfile.display().to_string(),
            &format!("oci:{}", layout.display()),
            &format!("docker://{reference}"),
        ],
    )?;
    eq(
        fs::read_to_string(&digestfile)?.trim(),
        &digest,
        "the digest skopeo pushed",
    )?;
    let raw = manifest_in(&b, &reference)?;
    eq(
        &dib::oci::digest_of(&raw),
        &digest,
        "the digest of the manifest the registry sends back",
    )
}

pub fn a_built_image_is_pushed_as_built() -> Result<(), Failed> {
    let b = Build::new();
    let registry = Registry::start()?;
    let out = b.f.path("images/tiny");
    let reference = format!("{}/dib/tiny:1", registry.addr());
    let o = b
        .dib(
            &[
                "create",
                "-n",
                "-t",
                "oci",
                "--push",
                &reference,
                "-o",
                &out.display().to_string(),
                "tiny-os",
            ],
            &[],
        )
        .output()?;
    succeeded(&o)?;
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(b.f.path("images/tiny.oci/index.json"))?)?;
    let built = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| format!("no manifests[0].digest in index.json: {index}"))?
        .to_string();
    let raw = manifest_in(&b, &reference)?;
    eq(
        &dib::oci::digest_of(&raw),
        &built,
        "the pushed manifest's digest against the built one",
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains(&format!(
            "dib: pushing {}.oci to {reference}\n",
            out.display()
        )) && err.contains(&format!("dib: pushed {reference}@{built}\n")),
        format!("no pushing and pushed lines in dib's output:\n{err}"),
    )?;
    b.assert_clean()
}

pub fn the_push_step_copies_a_layout_and_says_how_to_retry() -> Result<(), Failed> {
    let b = Build::new();
    let registry = Registry::start()?;
    let layout = b.f.path("images/img.oci");
    let digest = tiny_layout(&layout)?;
    let reference = format!("{}/dib/img:1", registry.addr());
    let output = dib::pipeline::outputs::Output {
        kind: dib::config::OutputType::Oci,
        path: layout.clone(),
    };
    let push = dib::oci::push::Push {
        target: dib::oci::push::PushTarget::parse(&reference, false, false)?,
        source: dib::oci::push::source(&output).ok_or("no source for -t oci")?,
        output,
        skopeo: "/usr/bin/skopeo".into(),
        authfile: None,
        // dib's own policy, as on a host without /etc/containers/policy.json.
        has_policy: false,
    };
    let pushed = push.run(&b.tmp, true)?;
    eq(&pushed, &digest, "the digest the push reports")?;
    eq(
        &dib::oci::digest_of(&manifest_in(&b, &reference)?),
        &digest,
        "the digest of the manifest in the registry",
    )?;
    b.assert_clean()?;
    // With the registry gone, the push fails, keeps the layout and says
    // how to push it by hand.
    drop(registry);
    let e = format!("{:#}", push.run(&b.tmp, true).unwrap_err());
    let by_hand = format!(
        "push again with `skopeo --insecure-policy copy --preserve-digests --dest-tls-verify=false oci:{} \
         docker://{reference}`",
        layout.display()
    );
    check(
        e.starts_with(&format!(
            "skopeo could not push {} to {reference} (exit status: 1); the outputs are kept: ",
            layout.display()
        )) && e.ends_with(&by_hand),
        format!("the error: {e}"),
    )?;
    check(layout.join("index.json").is_file(), "the layout is gone")?;
    b.assert_clean()
}
