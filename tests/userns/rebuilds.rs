//! Rebuilds: the layer cache (steps replayed until the first change; a
//! changed hook, variable or element set runs again; a build killed while
//! keeping a layer leaves nothing a later build uses; concurrent builds
//! share it), and reproducible outputs (the same inputs give the same
//! bytes; a changed input changes them).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::common::trees::file_sha256;

/// A probe element writing into the tree in a chroot phase of each kind
/// and recording nothing outside: which phases ran is read from dib's
/// log ("running PHASE").
fn probe(b: &Build, post_install: &str) {
    b.f.file(
        "e/probe/install.d/50-install",
        "#!/bin/sh\nset -eu\necho \"install $DIB_PROBE\" > /etc/probe-install\n",
        0o755,
    );
    b.f.file(
        "e/probe/post-install.d/50-post",
        &format!("#!/bin/sh\nset -eu\necho '{post_install}' > /etc/probe-post\n"),
        0o755,
    );
}

fn tar_build(b: &Build, extra: &[&str], env: &[(&str, &str)]) -> Result<Output, Failed> {
    let out = b.f.path("images/img").display().to_string();
    let mut args = vec!["create", "-n", "-t", "tar", "-o", &out];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["tiny-os", "probe"]);
    let mut all_env = vec![("DIB_PROBE", "1"), ("OVERWRITE_OLD_IMAGE", "1")];
    all_env.extend_from_slice(env);
    let o = b.dib(&args, &all_env).output()?;
    succeeded(&o)?;
    Ok(o)
}

/// The phases whose scripts ran, from the log.
fn ran(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| l.split(" | running ").nth(1))
        .filter_map(|r| r.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// One file of the tar output.
fn in_tar(b: &Build, name: &str) -> Result<String, Failed> {
    let o = Command::new("tar")
        .args(["-xOf"])
        .arg(b.f.path("images/img.tar"))
        .arg(name)
        .output()?;
    check(
        o.status.success(),
        format!("{name} is not in the tar output"),
    )?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn layers(b: &Build) -> PathBuf {
    b.f.path("home/.cache/image-create/dib-layers")
}

/// No layer is left half-written in the cache's `tmp/`.
fn no_partial_files(b: &Build) -> Result<(), Failed> {
    let partial: Vec<_> = fs::read_dir(layers(b).join("tmp"))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    check(
        partial.is_empty(),
        format!("partial files left: {partial:?}"),
    )
}

pub fn a_rebuild_replays_what_did_not_change_and_runs_from_the_first_change() -> Result<(), Failed>
{
    let b = Build::new();
    probe(&b, "post 1");
    let first = tar_build(&b, &[], &[])?;
    let all = ran(&first);
    check(
        all.iter().any(|p| p == "root.d") && all.iter().any(|p| p == "post-install.d"),
        format!("the first build ran {all:?}"),
    )?;

    // The same build again: every step replayed, the same tree.
    let again = tar_build(&b, &[], &[])?;
    eq(
        &format!("{:?}", ran(&again)),
        "[]",
        "phases run by a rebuild",
    )?;
    let log = String::from_utf8_lossy(&again.stderr);
    check(
        log.contains("reused the cached layers of root.d to cleanup.d"),
        format!("no replay said in:\n{log}"),
    )?;
    eq(
        &in_tar(&b, "./etc/probe-post")?,
        "post 1",
        "the replayed tree",
    )?;
    eq(
        &in_tar(&b, "./bin/busybox")
            .map(|s| !s.is_empty())?
            .to_string(),
        "true",
        "busybox",
    )?;

    // A changed post-install.d script: what came before is replayed, the
    // rest runs.
    probe(&b, "post 2");
    let changed = tar_build(&b, &[], &[])?;
    eq(
        &format!("{:?}", ran(&changed)),
        "[\"post-install.d\"]",
        "phases run after post-install.d changed",
    )?;
    eq(
        &in_tar(&b, "./etc/probe-post")?,
        "post 2",
        "the changed script's work",
    )?;
    eq(
        &in_tar(&b, "./etc/probe-install")?,
        "install 1",
        "install.d's work, replayed",
    )?;

    // A changed variable the hooks see: everything runs again.
    let env = tar_build(&b, &[], &[("DIB_PROBE", "2")])?;
    check(
        ran(&env).iter().any(|p| p == "root.d"),
        format!("a changed variable ran {:?}", ran(&env)),
    )?;
    eq(
        &in_tar(&b, "./etc/probe-install")?,
        "install 2",
        "the new variable's effect",
    )?;

    // Another element set: everything runs again.
    b.f.file(
        "e/extra/README.rst",
        "An element with nothing to run.\n",
        0o644,
    );
    let out = b.f.path("images/img").display().to_string();
    let o = b
        .dib(
            &[
                "create", "-n", "-t", "tar", "-o", &out, "tiny-os", "probe", "extra",
            ],
            &[("DIB_PROBE", "1"), ("OVERWRITE_OLD_IMAGE", "1")],
        )
        .output()?;
    succeeded(&o)?;
    check(
        ran(&o).iter().any(|p| p == "root.d"),
        format!("another element set ran {:?}", ran(&o)),
    )?;

    // --no-cache: everything runs, nothing is reused.
    let none = tar_build(&b, &["--no-cache"], &[])?;
    check(
        ran(&none).iter().any(|p| p == "root.d")
            && !String::from_utf8_lossy(&none.stderr).contains("reused"),
        format!("--no-cache ran {:?}", ran(&none)),
    )?;
    b.assert_clean()
}

pub fn a_build_killed_while_keeping_a_layer_leaves_nothing_a_rebuild_uses() -> Result<(), Failed> {
    let b = Build::new();
    probe(&b, "post");
    // A big file, so that root.d's layer takes a while to write.
    b.f.file(
        "e/probe/root.d/60-big",
        "#!/bin/sh\nset -eu\nhead -c 400000000 /dev/zero > \"$TARGET_ROOT/big\"\n",
        0o755,
    );
    let out = b.f.path("images/img").display().to_string();
    let mut child = b
        .dib(
            &["create", "-n", "-t", "tar", "-o", &out, "tiny-os", "probe"],
            &[("DIB_PROBE", "1")],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Killed once its first layer is being written.
    let tmp = layers(&b).join("tmp");
    let started = Instant::now();
    let seen = loop {
        let writing = fs::read_dir(&tmp)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tar"))
            })
            .unwrap_or(false);
        if writing {
            break true;
        }
        if child.try_wait()?.is_some() || started.elapsed() > Duration::from_secs(120) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill()?;
    child.wait()?;
    check(seen, "the build never started writing a layer")?;
    // kill -9 leaves dib no moment to remove its (empty) build directory.
    for e in fs::read_dir(&b.tmp)? {
        fs::remove_dir(e?.path())?;
    }
    let keys = fs::read_dir(layers(&b).join("keys"))
        .map(|d| d.count())
        .unwrap_or(0);
    eq(&keys.to_string(), "0", "keys left by the killed build")?;

    // The next build runs root.d again, completes, and leaves no partial
    // file behind.
    let o = b
        .dib(
            &["create", "-n", "-t", "tar", "-o", &out, "tiny-os", "probe"],
            &[("DIB_PROBE", "1")],
        )
        .output()?;
    succeeded(&o)?;
    check(
        ran(&o).iter().any(|p| p == "root.d"),
        format!("after the kill the build ran {:?}", ran(&o)),
    )?;
    no_partial_files(&b)?;
    b.assert_clean()
}

pub fn two_builds_at_once_share_the_cache() -> Result<(), Failed> {
    let b = Build::new();
    probe(&b, "post");
    // The builds make no image (so no output name tells them apart):
    // they share every key.
    let cwd = b.f.path("images/shared");
    fs::create_dir_all(&cwd)?;
    let spawn = || {
        b.command(&["tiny-os", "probe"], &[("DIB_PROBE", "1")])
            .current_dir(&cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    };
    let (one, two) = (spawn()?, spawn()?);
    for c in [one, two] {
        succeeded(&c.wait_with_output()?)?;
    }
    // A third replays every step from what the two left, each layer
    // checked against its hash on the way.
    let third = b
        .command(&["tiny-os", "probe"], &[("DIB_PROBE", "1")])
        .current_dir(&cwd)
        .output()?;
    succeeded(&third)?;
    eq(
        &format!("{:?}", ran(&third)),
        "[]",
        "phases run after two concurrent builds",
    )?;
    let log = String::from_utf8_lossy(&third.stderr);
    check(
        !log.contains("damaged"),
        format!("a damaged layer after concurrent builds:\n{log}"),
    )?;
    no_partial_files(&b)?;
    b.assert_clean()
}

pub fn the_same_inputs_give_the_same_bytes_and_a_changed_one_does_not() -> Result<(), Failed> {
    let b = Build::new();
    probe(&b, "post");
    // Files made in different orders and at different times by each build.
    b.f.file(
        "e/probe/cleanup.d/50-late",
        "#!/bin/bash\nset -eu\nfor n in $(seq 1 20 | shuf); do echo $n > \"$TARGET_ROOT/root/f$n\"; done\n\
         mkdir -p \"$TARGET_ROOT/boot/efi/EFI\" \"$TARGET_ROOT/var/log\"\ndate > \"$TARGET_ROOT/boot/efi/EFI/built\"\n\
         date +%N > \"$TARGET_ROOT/var/log/build.log\"\nhead -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > \"$TARGET_ROOT/etc/machine-id\"\n",
        0o755,
    );
    b.f.file(
        "e/probe/cleanup.d/60-efi-date",
        "#!/bin/bash\nset -eu\n# The ESP's file, by a fixed date (FAT keeps no time zone).\n\
         touch -d @1600000000 \"$TARGET_ROOT/boot/efi/EFI/built\"\necho fixed > \"$TARGET_ROOT/boot/efi/EFI/built\"\n",
        0o755,
    );
    let layout = crate::common::full_gpt_layout();
    let build = |name: &str, epoch: &str| -> Result<PathBuf, Failed> {
        let out = b.f.path(&format!("images/{name}/img"));
        fs::create_dir_all(out.parent().unwrap())?;
        let out_s = out.display().to_string();
        let o = b
            .dib(
                &[
                    "create",
                    "-n",
                    "--no-cache",
                    "-t",
                    "raw,qcow2,tar",
                    "-o",
                    &out_s,
                    "tiny-os",
                    "probe",
                ],
                &[
                    ("DIB_PROBE", "1"),
                    ("DIB_BLOCK_DEVICE_CONFIG", &layout),
                    ("SOURCE_DATE_EPOCH", epoch),
                    ("DIB_IMAGE_UUID_SEED", "rebuilds"),
                ],
            )
            .output()?;
        succeeded(&o)?;
        Ok(out)
    };
    let one = build("one", "1700000000")?;
    let two = build("two", "1700000000")?;
    let later = build("later", "1700000100")?;
    for ext in ["raw", "qcow2", "tar"] {
        let (a, c, d) = (
            file_sha256(&one.with_extension(ext))?,
            file_sha256(&two.with_extension(ext))?,
            file_sha256(&later.with_extension(ext))?,
        );
        eq(
            &c,
            &a,
            &format!("the {ext} of two builds of the same inputs"),
        )?;
        check(
            a != d,
            format!("the {ext} is the same with another SOURCE_DATE_EPOCH"),
        )?;
    }
    b.assert_clean()
}
