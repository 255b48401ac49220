//! Elements that put sources and facts about the build into the image, on
//! the busybox tree: source-repositories (git, tar, file and package
//! entries, the DIB_REPO* overrides, the cache refreshed when online and
//! used as it is offline, the manifest), element-manifest, and pypi with
//! pip-cache (pip's configuration and cache during the build only).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::tar_entries;

/// `git -C DIR ARGS...` with a fixed identity; its stdout, trimmed.
fn git(dir: &Path, args: &[&str]) -> Result<String, Failed> {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=dib test",
            "-c",
            "user.email=dib@test.invalid",
        ])
        .args(args)
        .output()?;
    check(
        o.status.success(),
        format!(
            "git {args:?} in {dir:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
    )?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Commit `content` as README on the current branch; the new commit.
fn commit(repo: &Path, content: &str) -> Result<String, Failed> {
    fs::write(repo.join("README"), content)?;
    git(repo, &["add", "README"])?;
    git(repo, &["commit", "-q", "-m", content.trim()])?;
    git(repo, &["rev-parse", "HEAD"])
}

/// A gzipped tarball at `at` of one directory `top` holding `files`.
fn tarball(b: &Build, at: &Path, top: &str, files: &[(&str, &str)]) -> Result<(), Failed> {
    let src = b.f.path("tar-src");
    let _ = fs::remove_dir_all(&src);
    for (path, content) in files {
        b.f.file(&format!("tar-src/{top}/{path}"), content, 0o644);
    }
    let o = Command::new("tar")
        .arg("-czf")
        .arg(at)
        .arg("-C")
        .arg(&src)
        .arg(top)
        .output()?;
    check(
        o.status.success(),
        format!("tar: {}", String::from_utf8_lossy(&o.stderr)),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `members` of `img.tar` extracted into a new directory `name` of `b`.
fn extract(b: &Build, name: &str, members: &[&str]) -> Result<std::path::PathBuf, Failed> {
    let x = b.f.path(name);
    fs::create_dir_all(&x)?;
    let o = Command::new("tar")
        .arg("-xf")
        .arg(b.f.path("img.tar"))
        .arg("-C")
        .arg(&x)
        .args(members)
        .output()?;
    check(
        o.status.success(),
        format!("extracting img.tar: {}", String::from_utf8_lossy(&o.stderr)),
    )?;
    Ok(x)
}

fn read(p: &Path) -> Result<String, Failed> {
    fs::read_to_string(p).map_err(|e| format!("reading {p:?}: {e}").into())
}

pub fn source_repositories_fetch_override_refresh_and_work_offline() -> Result<(), Failed> {
    let b = Build::new();
    // An upstream repository (master: one, tagged v1; two), another one for
    // the location override, a tarball and a file.
    let up = b.f.path("up");
    fs::create_dir_all(&up)?;
    git(&up, &["init", "-q", "-b", "master"])?;
    let one = commit(&up, "one\n")?;
    git(&up, &["tag", "v1"])?;
    let two = commit(&up, "two\n")?;
    let other = b.f.path("other");
    fs::create_dir_all(&other)?;
    git(&other, &["init", "-q", "-b", "master"])?;
    let other_head = commit(&other, "other\n")?;
    let tgz = b.f.path("pkg.tar.gz");
    tarball(
        &b,
        &tgz,
        "pkg-1.0",
        &[("setup.py", "v1\n"), ("sub/data", "data\n")],
    )?;
    let conf = b.f.file("probe.conf", "conf1\n", 0o600);
    let (up_s, tgz_s, conf_s) = (
        up.display().to_string(),
        tgz.display().to_string(),
        conf.display().to_string(),
    );
    // Lines are expanded by the shell: the upstream comes from a variable.
    b.f.file(
        "e/probe/source-repository-probe",
        &format!(
            "# the probe's sources\n\
             app git /opt/app ${{DIB_PROBE_UPSTREAM}}\n\
             \n\
             tagged git /opt/tagged {up_s} master\n\
             moved git /opt/moved /nonexistent/repo\n\
             pkg tar /opt/pkg {tgz_s} *\n\
             whole tar /opt/whole file://{tgz_s} .\n\
             conf file /etc/probe.conf file://{conf_s}\n\
             probe-pkg git /opt/nothing /nonexistent/pkg\n"
        ),
        0o644,
    );
    b.f.file("e/probe/README.md", "probe\n", 0o644);
    let cache = b.f.path("cache");
    let cache_s = cache.display().to_string();
    let other_s = other.display().to_string();
    let env = [
        ("DIB_IMAGE_CACHE", cache_s.as_str()),
        ("DIB_PROBE_UPSTREAM", up_s.as_str()),
        ("DIB_REPOREF_tagged", "v1"),
        ("DIB_REPOLOCATION_moved", other_s.as_str()),
        ("DIB_REPOTYPE_probe_pkg", "package"),
    ];
    let out = b.f.path("img").display().to_string();
    let build = |extra: &[&str], env: &[(&str, &str)]| -> Result<Output, Failed> {
        let mut args = vec!["create", "-n", "-t", "tar", "-o", &out];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "tiny-os",
            "source-repositories",
            "element-manifest",
            "probe",
        ]);
        Ok(b.dib(&args, env).output()?)
    };

    // Online, first build: everything fetched into the cache and the image.
    succeeded(&build(&[], &env)?)?;
    let entries = tar_entries(fs::File::open(b.f.path("img.tar"))?)?;
    let facts = |path: &str| {
        entries
            .iter()
            .find(|e| e.0 == path)
            .map(|e| format!("{path} {}/{} {:o}", e.1, e.2, e.3))
            .unwrap_or_else(|| format!("{path} missing"))
    };
    eq(
        &[
            "./etc/probe.conf",
            "./opt/pkg/setup.py",
            "./opt/pkg/sub/data",
            "./opt/whole/pkg-1.0/setup.py",
            "./opt/app/README",
            "./etc/dib-manifests/dib-element-manifest",
            "./etc/dib-source-repositories",
        ]
        .map(facts)
        .join("\n"),
        "./etc/probe.conf 0/0 644\n\
         ./opt/pkg/setup.py 0/0 644\n\
         ./opt/pkg/sub/data 0/0 644\n\
         ./opt/whole/pkg-1.0/setup.py 0/0 644\n\
         ./opt/app/README 0/0 644\n\
         ./etc/dib-manifests/dib-element-manifest 0/0 644\n\
         ./etc/dib-source-repositories 0/0 644",
        "owners and modes of what source-repositories and element-manifest wrote",
    )?;
    check(
        !entries.iter().any(|e| e.0.starts_with("./opt/nothing")),
        "a package entry was fetched into the image",
    )?;
    let x = extract(&b, "x1", &["./opt", "./etc"])?;
    eq(&read(&x.join("opt/app/README"))?, "two\n", "app's README")?;
    eq(
        &git(&x.join("opt/app"), &["rev-parse", "HEAD"])?,
        &two,
        "app's commit (master)",
    )?;
    eq(
        &git(&x.join("opt/app"), &["symbolic-ref", "--short", "HEAD"])?,
        "master",
        "app's checked-out branch",
    )?;
    eq(
        &git(&x.join("opt/app"), &["remote", "get-url", "origin"])?,
        &up_s,
        "app's origin",
    )?;
    eq(
        &git(&x.join("opt/tagged"), &["rev-parse", "HEAD"])?,
        &one,
        "tagged's commit (DIB_REPOREF_tagged=v1)",
    )?;
    eq(
        &read(&x.join("opt/moved/README"))?,
        "other\n",
        "moved's README (DIB_REPOLOCATION_moved)",
    )?;
    eq(&read(&x.join("opt/pkg/setup.py"))?, "v1\n", "pkg/setup.py")?;
    eq(&read(&x.join("etc/probe.conf"))?, "conf1\n", "probe.conf")?;
    let sum = |p: &Path| -> Result<String, Failed> {
        let o = Command::new("sha256sum").arg(p).output()?;
        Ok(String::from_utf8_lossy(&o.stdout)
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string())
    };
    let (tgz_sum, conf_sum) = (sum(&tgz)?, sum(&conf)?);
    let manifest = read(&x.join("etc/dib-manifests/dib-manifest-git-img"))?;
    eq(
        manifest.trim_end(),
        &format!(
            "app git /opt/app {up_s} {two}\n\
             tagged git /opt/tagged {up_s} {one}\n\
             moved git /opt/moved {other_s} {other_head}\n\
             pkg tar /opt/pkg {tgz_s} * sha256:{tgz_sum}\n\
             whole tar /opt/whole file://{tgz_s} . sha256:{tgz_sum}\n\
             conf file /etc/probe.conf file://{conf_s} sha256:{conf_sum}\n\
             probe-pkg package /opt/nothing /nonexistent/pkg"
        ),
        "the source-repositories manifest",
    )?;
    eq(
        read(&x.join("etc/dib-source-repositories"))?.trim_end(),
        "/opt/app\n/opt/tagged\n/opt/moved\n/opt/pkg\n/opt/whole\n/etc/probe.conf",
        "/etc/dib-source-repositories",
    )?;
    eq(
        read(&x.join("etc/dib-manifests/dib-element-manifest"))?.trim_end(),
        "cache-url\nelement-manifest\nmanifests\nprobe\nsource-repositories\ntiny-os",
        "the element manifest",
    )?;
    // The manifests element's copy beside the output has both.
    let saved = b.f.path("img.d/dib-manifests");
    eq(
        &read(&saved.join("dib-manifest-git-img"))?,
        &manifest,
        "the saved source-repositories manifest",
    )?;
    check(
        saved.join("dib-element-manifest").is_file(),
        "no img.d/dib-manifests/dib-element-manifest",
    )?;

    // Upstream moves on: a new commit, a new file, a new tarball.
    let three = commit(&up, "three\n")?;
    fs::write(&conf, "conf2\n")?;
    tarball(&b, &tgz, "pkg-1.0", &[("setup.py", "v2\n")])?;

    // Offline: the cache as it was, nothing fetched.
    let o = build(&["--offline"], &env)?;
    succeeded(&o)?;
    let x = extract(&b, "x2", &["./opt", "./etc"])?;
    eq(
        &git(&x.join("opt/app"), &["rev-parse", "HEAD"])?,
        &two,
        "app's commit offline (the cached master)",
    )?;
    eq(
        &read(&x.join("etc/probe.conf"))?,
        "conf1\n",
        "probe.conf offline",
    )?;
    eq(
        &read(&x.join("opt/pkg/setup.py"))?,
        "v1\n",
        "pkg/setup.py offline",
    )?;

    // Online again, with the layers of steps that reach the network never
    // reused (within their age they would be replayed): the cache is
    // refreshed.
    let mut fresh_env = env.to_vec();
    fresh_env.push(("DIB_LAYER_CACHE_MAX_AGE", "0"));
    let o = build(&[], &fresh_env)?;
    succeeded(&o)?;
    check(
        !String::from_utf8_lossy(&o.stderr).contains("reused the cached layers"),
        "layers of steps with network were reused with DIB_LAYER_CACHE_MAX_AGE=0",
    )?;
    let x = extract(&b, "x3", &["./opt", "./etc"])?;
    eq(
        &git(&x.join("opt/app"), &["rev-parse", "HEAD"])?,
        &three,
        "app's commit after a refresh",
    )?;
    eq(
        &read(&x.join("opt/app/README"))?,
        "three\n",
        "app's README after a refresh",
    )?;
    eq(
        &read(&x.join("etc/probe.conf"))?,
        "conf2\n",
        "probe.conf after a refresh",
    )?;
    eq(
        &read(&x.join("opt/pkg/setup.py"))?,
        "v2\n",
        "pkg/setup.py after a refresh",
    )?;

    // Offline, a location never fetched and a ref the cache lacks: clear
    // errors, and no output.
    fs::remove_file(b.f.path("img.tar"))?;
    let never = b.f.path("never-fetched").display().to_string();
    let mut moved_env = env.to_vec();
    moved_env.push(("DIB_REPOLOCATION_app", never.as_str()));
    let o = build(&["--offline"], &moved_env)?;
    check(
        !o.status.success(),
        "an offline build of an uncached repository succeeded",
    )?;
    let err = stderr(&o);
    check(
        err.contains(&format!(
            "source-repositories: app: offline, and {never} is not in the cache (expected {cache_s}/source-repositories/app_"
        )) && err.contains("build once online first"),
        format!("no clear offline error:\n{err}"),
    )?;
    let mut ref_env = env.to_vec();
    ref_env.push(("DIB_REPOREF_tagged", "no-such-branch"));
    let o = build(&["--offline"], &ref_env)?;
    check(
        !o.status.success(),
        "an offline build of an uncached ref succeeded",
    )?;
    check(
        stderr(&o).contains(
            "source-repositories: tagged: offline, and 'no-such-branch' is not in the cache of",
        ),
        format!("no clear offline error for the ref:\n{}", stderr(&o)),
    )?;
    check(!b.f.path("img.tar").exists(), "a failed build left img.tar")?;
    b.assert_clean()
}

pub fn bad_source_repository_entries_fail_naming_the_line() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/README.md", "probe\n", 0o644);
    let cases = [
        (
            "good package\nbad svn /opt/b /somewhere\n",
            "source-repositories: probe/source-repository-probe:2: 'bad' has type 'svn'; it must be git, tar, file or package",
        ),
        (
            "rel file opt/b /somewhere\n",
            "source-repositories: probe/source-repository-probe:1: 'rel' needs an absolute destination, not 'opt/b'",
        ),
        (
            "a file /etc/x /one\nb file /etc/x /two\n",
            "source-repositories: probe/source-repository-probe:2: 'b' goes to /etc/x, where 'a' already went: two repositories cannot share a destination",
        ),
        (
            "up git /opt/up /nonexistent/repo\n",
            "source-repositories: up: cloning /nonexistent/repo failed",
        ),
    ];
    let one = b.f.file("one", "1\n", 0o644).display().to_string();
    let cache = b.f.path("cache").display().to_string();
    for (lines, want) in cases {
        let lines = lines.replace("/one", &one);
        b.f.file("e/probe/source-repository-probe", &lines, 0o644);
        let o = b.run(
            &["tiny-os", "source-repositories", "probe"],
            &[("DIB_IMAGE_CACHE", &cache)],
        );
        check(
            !o.status.success(),
            format!("{lines:?}: the build succeeded"),
        )?;
        check(
            stderr(&o).contains(want),
            format!("{lines:?}: {want:?} not in stderr:\n{}", stderr(&o)),
        )?;
    }
    b.assert_clean()
}

pub fn pypi_and_pip_cache_configure_pip_for_the_build_only() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/README.md", "probe\n", 0o644);
    // The image's own pip.conf, which the build's replaces for a while.
    b.f.file(
        "e/probe/extra-data.d/10-own-pip-conf",
        "#!/bin/bash\nset -eu\nmkdir -p \"$TMP_MOUNT_PATH/root/.pip\"\n\
         echo '# the image s own' > \"$TMP_MOUNT_PATH/root/.pip/pip.conf\"\n",
        0o755,
    );
    b.f.file(
        "e/probe/install.d/50-probe",
        "#!/bin/sh\nset -eu\nmkdir -p /etc/probe\n\
         cp /root/.pip/pip.conf /etc/probe/pip.conf\n\
         ls /tmp/pypi/pkg > /etc/probe/mirror\n\
         echo \"$PIP_CACHE_DIR $PIP_DOWNLOAD_CACHE\" > /etc/probe/pip-env\n\
         echo built > /tmp/pip/from-the-image\n",
        0o755,
    );
    b.f.file(
        "e/probe/cleanup.d/50-probe",
        "#!/bin/bash\nset -eu\necho \"${PIP_CACHE_DIR-unset}\" > \"$DIB_TEST_OUT/outside-pip-cache-dir\"\n",
        0o755,
    );
    let cache = b.f.path("cache");
    b.f.file(
        "cache/pypi/mirror/pkg/index.html",
        "<a href=x>x</a>\n",
        0o644,
    );
    let cache_s = cache.display().to_string();
    let env = [
        ("DIB_IMAGE_CACHE", cache_s.as_str()),
        ("DIB_PYPI_MIRROR_URL", "https://mirror.invalid:8443/simple"),
        ("DIB_PYPI_MIRROR_URL_2", "http://user@second.invalid/pypi"),
        ("DIB_PYPI_MIRROR_URL_1", "file:///tmp/pypi"),
        ("PYPI_MIRROR_URL", "http://old.invalid/simple"),
        ("DIB_PIP_RETRIES", "0"),
    ];
    let out = b.f.path("img").display().to_string();
    let build = |extra: &[&str]| -> Result<Output, Failed> {
        let mut args = vec!["create", "-n", "-t", "tar", "-o", &out];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["tiny-os", "tiny-tools", "pypi", "pip-cache", "probe"]);
        Ok(b.dib(&args, &env).output()?)
    };
    let header = "# Written by dib's pypi element for the build; removed after post-install.d.\n\
                  [global]\n";
    let hosts = "trusted-host =\n    mirror.invalid\n    old.invalid\n    second.invalid\n\
                 retries = 0\n";

    // Online: pip keeps its default index; the mirrors are extra indexes,
    // in the order of their variables' names, the old name last.
    let o = build(&[])?;
    succeeded(&o)?;
    check(
        stderr(&o).contains("pypi: warning: PYPI_MIRROR_URL* are DIB's old names"),
        format!("no warning about PYPI_MIRROR_URL:\n{}", stderr(&o)),
    )?;
    let x = extract(&b, "x1", &["./etc", "./root"])?;
    eq(
        &read(&x.join("etc/probe/pip.conf"))?,
        &format!(
            "{header}extra-index-url =\n    https://mirror.invalid:8443/simple\n    \
             file:///tmp/pypi\n    http://user@second.invalid/pypi\n    \
             http://old.invalid/simple\n{hosts}"
        ),
        "pip.conf online",
    )?;
    eq(
        &read(&x.join("etc/probe/mirror"))?,
        "index.html\n",
        "the cache's mirror at /tmp/pypi",
    )?;
    eq(
        &read(&x.join("etc/probe/pip-env"))?,
        "/tmp/pip /tmp/pip\n",
        "PIP_CACHE_DIR and PIP_DOWNLOAD_CACHE in the chroot",
    )?;
    eq(
        &b.out("outside-pip-cache-dir"),
        "unset",
        "PIP_CACHE_DIR outside the chroot",
    )?;
    eq(
        &read(&cache.join("pip/from-the-image"))?,
        "built\n",
        "what the image wrote to /tmp/pip, in the host's cache",
    )?;
    let entries = tar_entries(fs::File::open(b.f.path("img.tar"))?)?;
    let left: Vec<&str> = entries
        .iter()
        .map(|e| e.0.as_str())
        .filter(|p| p.starts_with("./tmp/pip") || p.starts_with("./tmp/pypi"))
        .collect();
    check(
        left.is_empty(),
        format!("the cache or the mirror is in the image: {left:?}"),
    )?;
    eq(
        &read(&x.join("root/.pip/pip.conf"))?,
        "# the image s own\n",
        "the image's own pip.conf, back after post-install.d",
    )?;

    // Offline: only the mirrors, the first as the index.
    succeeded(&build(&["--offline"])?)?;
    let x = extract(&b, "x2", &["./etc", "./root"])?;
    eq(
        &read(&x.join("etc/probe/pip.conf"))?,
        &format!(
            "{header}index-url = https://mirror.invalid:8443/simple\nextra-index-url =\n    \
             file:///tmp/pypi\n    http://user@second.invalid/pypi\n    \
             http://old.invalid/simple\n{hosts}"
        ),
        "pip.conf offline",
    )?;
    b.assert_clean()
}
