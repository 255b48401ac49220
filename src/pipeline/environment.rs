//! The environment hooks see, as pure functions: [`job_env`], what every
//! hook of a build starts from (made on the host side), and [`hook_env`],
//! a phase's hooks' view of it (made in pid 1: where the tree and the hook
//! tree are from inside or outside the chroot, `TARGET_ROOT`, the image).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use dib_sandbox::mounts::{IMAGE_FILE_IN_TARGET, IN_TARGET};

use super::job::JOB_ENV;
use crate::blockdev::Layout;
use crate::config::{BuildConfig, Tmpfs, DEFAULT_MIN_TMPFS_GB};
use crate::elements::Resolution;
use crate::phases::Phase;

/// Where an image's commands are, in `PATH` order (Debian's root `PATH`):
/// the chroot's `PATH`, and where a ramdisk looks for its binaries.
pub const IMAGE_BIN_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// `PATH` inside the chroot.
pub fn chroot_path() -> String {
    IMAGE_BIN_DIRS.join(":")
}

/// The environment every hook starts from, and the body of
/// `get_image_element_array`: the user's environment (after `-c`) with the
/// build's own variables set.
pub fn job_env(
    config: &BuildConfig,
    resolution: &Resolution,
    args: &str,
) -> Result<(BTreeMap<String, String>, String)> {
    // Absolute: hooks run in the build directory, not where dib was started.
    let image_name = std::path::absolute(&config.image_name)
        .with_context(|| format!("resolving the output name {:?}", config.image_name))?;
    let (image_element, image_element_yaml, element_array) =
        crate::element_info::env_script_parts(resolution);
    let mut env = config.env.clone();
    // The layer cache's settings are dib's, not the hooks': a build with
    // other ones replays the same layers.
    env.retain(|k, _| {
        k != JOB_ENV && !k.starts_with("BASH_FUNC_") && !super::layers::keys::is_cache_setting(k)
    });
    let dib_env = declare_p(env.iter().filter(|(k, _)| k.starts_with("DIB_")));
    let flag = |on: bool| if on { "1" } else { "0" }.to_string();
    let (no_tmpfs, min_tmpfs) = match config.tmpfs {
        Tmpfs::Never => (true, DEFAULT_MIN_TMPFS_GB),
        Tmpfs::WhenMemoryAtLeastTwice(gb) => (false, gb),
    };
    let home = env.get("HOME").cloned().unwrap_or_default();
    for (k, v) in [
        ("DIB_LOCKFILES", format!("{home}/.cache/dib/lockfiles")),
        ("DIB_PYTHON_EXEC", host_python(&env)),
    ] {
        env.entry(k.to_string()).or_insert(v);
    }
    for (k, v) in [
        ("ARCH", config.arch.to_string()),
        ("IMAGE_NAME", image_name.display().to_string()),
        ("IMAGE_ELEMENT", image_element),
        ("IMAGE_ELEMENT_YAML", image_element_yaml),
        ("DIB_ENV", dib_env),
        // Empty when online, as DIB has it: elements test `-z`.
        ("DIB_OFFLINE", if config.offline { "1" } else { "" }.into()),
        ("DIB_CHECKSUM", flag(config.checksum)),
        ("DIB_NO_TMPFS", flag(no_tmpfs)),
        ("DIB_MIN_TMPFS", min_tmpfs.to_string()),
        ("DIB_IMAGE_CACHE", config.image_cache.display().to_string()),
        ("DIB_DEBUG_TRACE", config.trace.to_string()),
        ("DIB_ROOT_LABEL", config.root_label.clone()),
        (
            "DIB_DEFAULT_INSTALLTYPE",
            config.install_type.as_str().to_string(),
        ),
        ("DIB_ARGS", args.to_string()),
        ("FS_TYPE", config.fs_type.to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    Ok((env, element_array))
}

/// Variables as bash's `declare -p` prints exported ones, a line each
/// (`DIB_ENV`, which hooks `eval` or log).
pub fn declare_p<'a>(vars: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut out = Vec::new();
    for (k, v) in vars {
        let mut quoted = String::with_capacity(v.len() + 2);
        for c in v.chars() {
            if matches!(c, '"' | '\\' | '$' | '`') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        out.push(format!("declare -x {k}=\"{quoted}\""));
    }
    out.join("\n")
}

/// `DIB_PYTHON_EXEC`: the host's python3 (DIB's is the Python it runs on),
/// found on the user's `PATH` or in the system directories.
fn host_python(env: &BTreeMap<String, String>) -> String {
    let path = env.get("PATH").map_or("", String::as_str);
    path.split(':')
        .chain(IMAGE_BIN_DIRS)
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("python3"))
        .find(|p| p.is_file())
        .map_or_else(|| "python3".to_string(), |p| p.display().to_string())
}

/// Where a build's directories are, seen from pid 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// `TMP_BUILD_DIR`.
    pub build: PathBuf,
    /// The tree (`TARGET_ROOT`).
    pub tree: PathBuf,
    /// The tree through a bind mount (`TMP_MOUNT_PATH`, the chroot's root).
    pub mnt: PathBuf,
    /// The hook tree (`TMP_HOOKS_PATH` outside the chroot).
    pub hooks: PathBuf,
    /// Shims for outside phases (`sudo`), first on their `PATH`.
    pub bin: PathBuf,
}

/// The disk image, as the phases after block-device.d see it.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    pub layout: &'a Layout,
    /// The image file, from outside the chroot.
    pub file: &'a Path,
}

/// The environment of `phase`'s hooks.
pub fn hook_env(
    base: &BTreeMap<String, String>,
    element_array: &str,
    dirs: &Dirs,
    phase: Phase,
    image: Option<Image<'_>>,
) -> BTreeMap<String, String> {
    let mut env = base.clone();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("TMP_BUILD_DIR", dirs.build.display().to_string());
    set("TMP_MOUNT_PATH", dirs.mnt.display().to_string());
    set("LC_ALL", "C".into());
    set(
        "BASH_FUNC_get_image_element_array%%",
        format!("() {{  echo {element_array}\n}}"),
    );
    let hooks = if phase.chroot() {
        format!("/{IN_TARGET}")
    } else {
        dirs.hooks.display().to_string()
    };
    set("_LIB", super::runtime::lib_dir(&hooks));
    set("DIB_RUN_PARTS", super::runtime::run_parts(&hooks));
    set("TMP_HOOKS_PATH", hooks);
    if phase.chroot() {
        set("HOME", "/root".into());
        set("PATH", chroot_path());
        env.remove("TMPDIR");
    } else {
        let host_path = base.get("PATH").cloned().unwrap_or_else(chroot_path);
        set(
            "PATH",
            format!("{}:{}", dirs.bin.display(), with_sbin(&host_path)),
        );
    }
    if let Some(image) = image {
        let file = if phase.chroot() {
            Path::new("/").join(IMAGE_FILE_IN_TARGET)
        } else {
            image.file.to_path_buf()
        };
        env.extend(crate::blockdev::hook_env(image.layout, &file));
    }
    if phase.target_root() {
        env.insert("TARGET_ROOT".into(), dirs.tree.display().to_string());
    } else {
        env.remove("TARGET_ROOT");
    }
    env
}

/// `path` with the system directories appended that it lacks: hooks run
/// as root of the build (DIB's run under sudo, whose PATH has them), and
/// call chroot, mkfs, depmod, ... by name, which a plain user's PATH may
/// not find.
fn with_sbin(path: &str) -> String {
    let mut out = path.to_string();
    for d in IMAGE_BIN_DIRS.iter().filter(|d| d.ends_with("/sbin")) {
        if !path.split(':').any(|p| p == *d) {
            out.push(':');
            out.push_str(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::PHASES;

    fn dirs() -> Dirs {
        let b = PathBuf::from("/tmp/dib_build.x");
        Dirs {
            tree: b.join("built"),
            mnt: b.join("mnt"),
            hooks: b.join("hooks"),
            bin: b.join("bin"),
            build: b,
        }
    }

    #[test]
    fn outside_hooks_find_system_tools() {
        assert_eq!(
            with_sbin("/usr/bin:/bin"),
            "/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
        );
        assert_eq!(
            with_sbin("/sbin:/usr/sbin:/usr/local/sbin"),
            "/sbin:/usr/sbin:/usr/local/sbin"
        );
    }

    #[test]
    fn each_phase_sees_the_tree_from_where_it_runs() {
        let base: BTreeMap<String, String> = [
            ("PATH", "/usr/bin"),
            ("TMPDIR", "/var/tmp"),
            ("TARGET_ROOT", "/stale"),
            ("DIB_X", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        // (phase, TMP_HOOKS_PATH, PATH, TARGET_ROOT, TMPDIR kept)
        let b = "/tmp/dib_build.x";
        let outside_path = format!("{b}/bin:/usr/bin:/usr/local/sbin:/usr/sbin:/sbin");
        let chroot = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string();
        let cases: Vec<(Phase, String, &str, Option<String>, bool)> = PHASES
            .into_iter()
            .map(|p| match (p.chroot(), p.target_root()) {
                (true, _) => (p, format!("/{IN_TARGET}"), chroot.as_str(), None, false),
                (false, tr) => (
                    p,
                    format!("{b}/hooks"),
                    outside_path.as_str(),
                    tr.then(|| format!("{b}/built")),
                    true,
                ),
            })
            .collect();
        assert_eq!(
            cases.iter().filter(|c| c.3.is_some()).count(),
            2,
            "root.d and cleanup.d get TARGET_ROOT"
        );
        for (phase, hooks, path, target_root, tmpdir) in cases {
            let env = hook_env(&base, "a b", &dirs(), phase, None);
            assert_eq!(env["TMP_HOOKS_PATH"], hooks, "{phase}");
            assert_eq!(env["PATH"], path, "{phase}");
            assert_eq!(env.get("TARGET_ROOT"), target_root.as_ref(), "{phase}");
            assert_eq!(env.contains_key("TMPDIR"), tmpdir, "{phase}");
            assert_eq!(env["TMP_MOUNT_PATH"], format!("{b}/mnt"));
            assert_eq!(env["DIB_X"], "1");
            assert_eq!(env["LC_ALL"], "C");
            assert_eq!(
                env["BASH_FUNC_get_image_element_array%%"],
                "() {  echo a b\n}"
            );
            assert!(!env.contains_key("IMAGE_BLOCK_DEVICE"));
        }
    }

    #[test]
    fn the_image_is_named_as_each_phase_sees_it() {
        let c = crate::blockdev::config::default_config();
        let opts = crate::blockdev::test_options();
        let usage = [("/".to_string(), 1 << 20)].into();
        let layout = crate::blockdev::layout::plan(
            &c,
            &opts,
            &usage,
            &mut crate::blockdev::layout::RandomIds,
        )
        .unwrap();
        let file = Path::new("/tmp/dib_build.x/image/disk.raw");
        let image = Some(Image {
            layout: &layout,
            file,
        });
        let base = BTreeMap::new();
        for (phase, seen) in [
            (Phase::PreFinalise, file.display().to_string()),
            (Phase::Finalise, format!("/{IMAGE_FILE_IN_TARGET}")),
        ] {
            let env = hook_env(&base, "", &dirs(), phase, image);
            assert_eq!(env["IMAGE_BLOCK_DEVICE"], seen, "{phase}");
            assert_eq!(env["DIB_ROOT_FS_UUID"], layout.root().uuid);
        }
    }
}
