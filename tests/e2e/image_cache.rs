//! The image cache: a warm build unpacks the cached base, two cold builds
//! at once bootstrap it once, and offline builds use only what it holds.

use std::fs;
use std::path::Path;

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{cache, create, create_cmd, stderr};

pub fn concurrent_cold_builds_share_one_bootstrap() -> Result<(), Failed> {
    let b = Build::new();
    let cache = b.f.path("fresh-cache");
    let spawn = |name: &str| -> Result<std::process::Child, Failed> {
        let out = b.f.path(name).display().to_string();
        Ok(create_cmd(
            &b,
            &cache,
            &["-t", "tar", "-o", &out, "debian-minimal"],
            &[],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?)
    };
    let (one, two) = (spawn("one")?, spawn("two")?);
    let (one, two) = (one.wait_with_output()?, two.wait_with_output()?);
    succeeded(&one)?;
    succeeded(&two)?;
    let logs = format!("{}{}", stderr(&one), stderr(&two));
    let count = |what: &str| logs.matches(what).count();
    eq(
        &format!(
            "{} {}",
            count("debian-minimal: bootstrapping"),
            count("debian-minimal: unpacking the cached base")
        ),
        "1 1",
        "bootstraps and unpacks across the two builds",
    )?;
    // Both trees are the same: the cached tarball is whole.
    let list = |p: &Path| -> Result<usize, Failed> {
        Ok(tar::Archive::new(fs::File::open(p)?).entries()?.count())
    };
    eq(
        &list(&b.f.path("one.tar"))?.to_string(),
        &list(&b.f.path("two.tar"))?.to_string(),
        "entries in the two outputs",
    )?;
    b.assert_clean()
}
pub fn a_warm_build_unpacks_the_cached_base() -> Result<(), Failed> {
    let b = Build::new();
    let cache = cache();
    succeeded(&create(
        &b,
        &cache,
        &[
            "-t",
            "tar",
            "-o",
            &b.f.path("one").display().to_string(),
            "debian-minimal",
        ],
    )?)?;
    let o = create(
        &b,
        &cache,
        &[
            "-t",
            "tar",
            "-o",
            &b.f.path("two").display().to_string(),
            "debian-minimal",
        ],
    )?;
    succeeded(&o)?;
    check(
        stderr(&o).contains("debian-minimal: unpacking the cached base"),
        format!("the second build did not use the cache:\n{}", stderr(&o)),
    )?;
    b.assert_clean()
}

pub fn offline_builds_use_only_the_cache() -> Result<(), Failed> {
    let b = Build::new();
    // Nothing cached: a clear error, nothing left behind.
    let empty = b.f.path("empty-cache");
    let o = create(
        &b,
        &empty,
        &[
            "--offline",
            "-t",
            "tar",
            "-o",
            &b.f.path("no").display().to_string(),
            "debian-minimal",
        ],
    )?;
    check(
        !o.status.success(),
        "an offline build with an empty cache succeeded",
    )?;
    check(
        stderr(&o).contains("debian-minimal: offline, and no cached base tree for"),
        format!("stderr:\n{}", stderr(&o)),
    )?;
    check(!b.f.path("no.tar").exists(), "an output was written")?;
    // With the shared cache filled, offline works.
    let cache = cache();
    succeeded(&create(
        &b,
        &cache,
        &[
            "-t",
            "tar",
            "-o",
            &b.f.path("fill").display().to_string(),
            "-p",
            "less",
            "debian-minimal",
        ],
    )?)?;
    succeeded(&create(
        &b,
        &cache,
        &[
            "--offline",
            "-t",
            "tar",
            "-o",
            &b.f.path("yes").display().to_string(),
            "-p",
            "less",
            "debian-minimal",
        ],
    )?)?;
    // A package no online build fetched cannot come from nowhere.
    let o = create(
        &b,
        &cache,
        &[
            "--offline",
            "-t",
            "tar",
            "-o",
            &b.f.path("hello").display().to_string(),
            "-p",
            "hello",
            "debian-minimal",
        ],
    )?;
    check(
        !o.status.success(),
        "an offline build installed a package it never downloaded",
    )?;
    check(
        stderr(&o).contains(
            "install-packages: offline, and some of hello (or what they need) were never downloaded",
        ),
        format!("stderr:\n{}", stderr(&o)),
    )?;
    b.assert_clean()
}
