#![allow(clippy::type_complexity)] // inline case tables read better than named types

use std::collections::BTreeMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    let mut e: Env = [("HOME".to_string(), "/home/u".to_string())].into();
    e.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    e
}

fn args(elements: &[&str]) -> CreateArgs {
    CreateArgs {
        elements: elements.iter().map(|s| s.to_string()).collect(),
        block_backend: BlockBackend::Auto,
        ..Default::default()
    }
}

fn build(a: &CreateArgs, e: &Env) -> Result<BuildConfig> {
    BuildConfig::new(Mode::Disk, a, e, vec![])
}

#[test]
fn defaults() {
    let c = build(&args(&["debian", "vm"]), &env(&[])).unwrap();
    assert_eq!(c.elements, vec!["base", "debian", "vm"]);
    assert_eq!(c.output_types, vec![OutputType::Qcow2]);
    assert_eq!(c.image_name, "image");
    assert_eq!(c.image_cache, PathBuf::from("/home/u/.cache/image-create"));
    assert_eq!(c.root_label, "cloudimg-rootfs");
    assert_eq!(c.tmpfs, Tmpfs::WhenMemoryAtLeastTwice(2.0));
    assert_eq!(c.fs_type, FsType::Ext4);
    assert!(c.compress && !c.offline && !c.checksum && !c.overwrite_old_image);
    assert_eq!(c.trace, 0);
    assert_eq!(c.arch, Arch::host());
}

#[test]
fn output_name_suffix() {
    // (-o, -t, expected image name)
    let cases: &[(&str, &[&str], &str)] = &[
        ("foo.qcow2", &[], "foo"),
        ("foo.qcow2", &["qcow2"], "foo"),
        ("foo.raw", &["raw"], "foo"),
        ("foo.qcow2", &["raw"], "foo.qcow2"),
        ("foo.qcow2", &["qcow2", "raw"], "foo.qcow2"),
        ("out/deb.tar", &["tar"], "out/deb"),
        (".qcow2", &[], ".qcow2"),
        ("dir/.qcow2", &[], "dir/.qcow2"),
    ];
    for (o, t, want) in cases {
        let mut a = args(&["x"]);
        a.output = Some(o.to_string());
        a.types = t.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            build(&a, &env(&[])).unwrap().image_name,
            *want,
            "-o {o} -t {t:?}"
        );
    }
}

#[test]
fn flags_beat_environment() {
    let e = env(&[
        ("DIB_IMAGE_SIZE", "3"),
        ("DIB_DEBUG_TRACE", "1"),
        ("DIB_IMAGE_CACHE", "/c"),
        ("DIB_ROOT_LABEL", "envlabel"),
        ("DIB_DEFAULT_INSTALLTYPE", "package"),
        ("ARCH", "arm64"),
    ]);
    let c = build(&args(&["x"]), &e).unwrap();
    assert_eq!(
        (
            c.image_size_gb,
            c.trace,
            c.image_cache.clone(),
            c.root_label.as_str(),
            c.install_type,
            c.arch
        ),
        (
            Some(3.0),
            1,
            PathBuf::from("/c"),
            "envlabel",
            InstallType::Package,
            Arch::Arm64
        )
    );
    let mut a = args(&["x"]);
    a.image_size = Some(1.5);
    a.trace = 2;
    a.image_cache = Some("/flag".into());
    a.root_label = Some("flaglabel".into());
    a.install_type = Some(InstallType::Source);
    a.arch = Some("i386".into());
    let c = build(&a, &e).unwrap();
    assert_eq!(
        (
            c.image_size_gb,
            c.trace,
            c.image_cache,
            c.root_label.as_str(),
            c.install_type,
            c.arch
        ),
        (
            Some(1.5),
            2,
            PathBuf::from("/flag"),
            "flaglabel",
            InstallType::Source,
            Arch::I386
        )
    );
}

#[test]
fn environment_switches() {
    let e = env(&[
        ("DIB_OFFLINE", "1"),
        ("DIB_CHECKSUM", "1"),
        ("DIB_NO_TMPFS", "1"),
        ("OVERWRITE_OLD_IMAGE", "1"),
        ("FS_TYPE", "xfs"),
        ("break", "before-install,after-finalise.d,after-error"),
        ("TMP_DIR", "/var/tmp"),
    ]);
    let c = build(&args(&["x"]), &e).unwrap();
    assert!(c.offline && c.checksum && c.overwrite_old_image);
    assert_eq!(c.tmpfs, Tmpfs::Never);
    assert_eq!(c.root_label, "img-rootfs");
    assert_eq!(
        c.breakpoints,
        vec![
            Breakpoint::Before(crate::phases::Phase::Install),
            Breakpoint::After(crate::phases::Phase::Finalise),
            Breakpoint::AfterError
        ]
    );
    assert_eq!(c.tmp_dir, PathBuf::from("/var/tmp"));
}

#[test]
fn errors_name_what_was_wrong() {
    // (environment, extra args, expected message fragment)
    let cases: &[(&[(&str, &str)], fn(&mut CreateArgs), &str)] = &[
        (
            &[("DIB_IMAGE_SIZE", "big")],
            |_| {},
            "DIB_IMAGE_SIZE=\"big\" is not valid",
        ),
        (
            &[("DIB_IMAGE_SIZE", "-1")],
            |_| {},
            "DIB_IMAGE_SIZE=-1 is not valid",
        ),
        (
            &[("DIB_OFFLINE", "yes")],
            |_| {},
            "DIB_OFFLINE=\"yes\" is not valid: use 1",
        ),
        (
            &[("FS_TYPE", "zfs")],
            |_| {},
            "FS_TYPE=\"zfs\" is not valid",
        ),
        (&[("ARCH", "sparc")], |_| {}, "ARCH=\"sparc\" is not valid"),
        (
            &[("break", "during-install")],
            |_| {},
            "\"during-install\" is not a break point",
        ),
        (
            &[("break", "after-instal")],
            |_| {},
            "\"after-instal\" is not a break point",
        ),
        (
            &[("DIB_DEFAULT_INSTALLTYPE", "pip")],
            |_| {},
            "DIB_DEFAULT_INSTALLTYPE=\"pip\"",
        ),
        (
            &[],
            |a| a.arch = Some("sparc".into()),
            "invalid value \"sparc\" for '-a <ARCH>'",
        ),
        (
            &[],
            |a| a.types = vec!["iso".into()],
            "invalid value \"iso\" for '-t <TYPES>'",
        ),
        (
            &[],
            |a| a.root_label = Some("a-label-longer-than-16".into()),
            "from --root-label: ext4 labels are 1 to 16 bytes",
        ),
        (
            &[("FS_TYPE", "xfs"), ("DIB_ROOT_LABEL", "cloudimg-rootfs")],
            |_| {},
            "from DIB_ROOT_LABEL: xfs labels are 1 to 12 bytes",
        ),
        (
            &[],
            |a| a.qemu_img_options = Some("compat=1.1,bad".into()),
            "'--qemu-img-options <K=V,..>'",
        ),
        (
            &[],
            |a| a.packages = vec!["vim".into(), "".into()],
            "for '-p <PKGS>'",
        ),
        (
            &[],
            |a| a.elements = vec!["a b".into()],
            "invalid element name \"a b\"",
        ),
        (&[], |a| a.output = Some("dir/".into()), "for '-o <NAME>'"),
    ];
    for (e, tweak, want) in cases {
        let mut a = args(&["x"]);
        tweak(&mut a);
        let err = format!("{:#}", build(&a, &env(e)).unwrap_err());
        assert!(err.contains(want), "{e:?}: got {err:?}, want {want:?}");
    }
}

#[test]
fn path_checks() {
    let dir = tempfile::tempdir().unwrap();
    let bad_yaml = dir.path().join("bd.yaml");
    std::fs::write(&bad_yaml, "- local_loop:\n    name: [\n").unwrap();
    let d = dir.path().display().to_string();
    // (environment, --logfile, expected error or None)
    let cases: Vec<(Vec<(&str, String)>, Option<&str>, Option<String>)> = vec![
            (vec![("TMP_DIR", d.clone())], None, None),
            (
                vec![("TMP_DIR", format!("{d}/nope"))],
                None,
                Some(format!("TMP_DIR=\"{d}/nope\" is not a directory: create it or point TMP_DIR elsewhere")),
            ),
            (
                vec![("TMP_DIR", d.clone())],
                Some("/nonexistent/dir/log"),
                Some("invalid value \"/nonexistent/dir/log\" for '--logfile <FILE>': directory \"/nonexistent/dir\" does not exist".into()),
            ),
            (vec![("TMP_DIR", d.clone())], Some("build.log"), None),
            (
                vec![("TMP_DIR", d.clone()), ("DIB_BLOCK_DEVICE_CONFIG", "file:///nonexistent.yaml".into())],
                None,
                Some("DIB_BLOCK_DEVICE_CONFIG names \"/nonexistent.yaml\", which cannot be read: No such file or directory (os error 2)".into()),
            ),
            (
                vec![("TMP_DIR", d.clone()), ("DIB_BLOCK_DEVICE_CONFIG", format!("file://{}", bad_yaml.display()))],
                None,
                Some(format!("DIB_BLOCK_DEVICE_CONFIG file {bad_yaml:?} is not valid YAML: ")),
            ),
            (
                vec![("TMP_DIR", d.clone()), ("DIB_BLOCK_DEVICE_CONFIG", "- mkfs: {type: ext4".into())],
                None,
                Some("DIB_BLOCK_DEVICE_CONFIG is not valid YAML: ".into()),
            ),
            (vec![("TMP_DIR", d.clone()), ("DIB_BLOCK_DEVICE_CONFIG", "- mkfs: {type: ext4}".into())], None, None),
        ];
    for (vars, logfile, want) in cases {
        let e: Env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .chain([("HOME".to_string(), "/h".to_string())])
            .collect();
        let mut a = args(&["x"]);
        a.logfile = logfile.map(PathBuf::from);
        let got = build(&a, &e)
            .unwrap()
            .check_paths()
            .map_err(|e| format!("{e:#}"));
        match (&want, &got) {
            (None, Ok(())) => {}
            (Some(w), Err(g)) if g.starts_with(w.as_str()) => {}
            _ => panic!("{vars:?} {logfile:?}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn missing_home_needs_image_cache() {
    let e: Env = BTreeMap::new();
    let err = build(&args(&["x"]), &e).unwrap_err().to_string();
    assert!(err.contains("pass --image-cache DIR"), "{err}");
}

#[test]
fn base_and_ramdisk_elements() {
    let mut a = args(&["deploy-ironic"]);
    let c = BuildConfig::new(Mode::Ramdisk, &a, &env(&[]), vec![]).unwrap();
    assert_eq!(c.elements, vec!["base", "ramdisk", "deploy-ironic"]);
    a.no_base = true;
    a.ramdisk_element = Some("dracut-ramdisk".into());
    let c = BuildConfig::new(Mode::Ramdisk, &a, &env(&[]), vec![]).unwrap();
    assert_eq!(c.elements, vec!["dracut-ramdisk", "deploy-ironic"]);
}

#[test]
fn clear_env_keeps_dib_and_essentials() {
    let e = env(&[
        ("DIB_RELEASE", "bookworm"),
        ("PATH", "/bin"),
        ("SECRET", "x"),
        ("https_proxy", "p"),
    ]);
    let mut a = args(&["x"]);
    a.clear_env = true;
    let c = build(&a, &e).unwrap();
    let keys: Vec<&str> = c.env.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["DIB_RELEASE", "HOME", "PATH", "https_proxy"]);
}

#[test]
fn the_hosts_32_bit_sibling_runs_natively_under_linux32() {
    use Arch::*;
    assert!(I386.native_on(Amd64) && I386.runs_as_linux32_on(Amd64));
    assert!(Armhf.native_on(Arm64) && Armhf.runs_as_linux32_on(Arm64));
    assert!(Amd64.native_on(Amd64) && !Amd64.runs_as_linux32_on(Amd64));
    for foreign in [Arm64, Armhf] {
        assert!(!foreign.native_on(Amd64) && !foreign.runs_as_linux32_on(Amd64));
    }
    assert!(!Amd64.native_on(I386) && !Amd64.native_on(Arm64));
}

#[test]
fn push_comes_from_the_flag_over_the_environment() {
    let mut a = args(&["x"]);
    let c = build(&a, &env(&[])).unwrap();
    assert_eq!(c.push, None);
    // DIB_PUSH_INSECURE set for every build asks for nothing without a push.
    assert_eq!(
        build(&a, &env(&[("DIB_PUSH_INSECURE", "1")])).unwrap().push,
        None
    );

    let c = build(&a, &env(&[("DIB_PUSH", "localhost:5000/e:1")])).unwrap();
    let p = c.push.unwrap();
    assert_eq!(
        (p.reference.to_string(), p.given_by, p.insecure),
        ("localhost:5000/e:1".into(), "DIB_PUSH", false)
    );

    a.push = Some("registry.example/f:2".into());
    let c = build(
        &a,
        &env(&[
            ("DIB_PUSH", "localhost:5000/e:1"),
            ("DIB_PUSH_INSECURE", "1"),
        ]),
    )
    .unwrap();
    let p = c.push.unwrap();
    assert_eq!(
        (p.reference.to_string(), p.given_by, p.insecure),
        ("registry.example/f:2".into(), "--push", true)
    );

    a.push_insecure = true;
    assert!(build(&a, &env(&[])).unwrap().push.unwrap().insecure);
    a.push = None;
    assert_eq!(
        build(&a, &env(&[])).unwrap_err().to_string(),
        "--push-insecure needs a registry to push to: add --push REF"
    );
    assert!(
        build(&a, &env(&[("DIB_PUSH", "localhost/x")]))
            .unwrap()
            .push
            .unwrap()
            .insecure
    );

    let a = args(&["x"]);
    let e = build(&a, &env(&[("DIB_PUSH", "x")])).unwrap_err();
    assert!(
        format!("{e:#}").starts_with("DIB_PUSH=\"x\" is not valid: "),
        "{e:#}"
    );
    let e = build(
        &a,
        &env(&[("DIB_PUSH", "localhost/x"), ("DIB_PUSH_INSECURE", "yes")]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "DIB_PUSH_INSECURE=\"yes\" is not valid: use 1 to enable or 0 to disable"
    );
}

#[test]
fn the_image_is_named_by_docker_target_else_the_push_else_the_output() {
    let mut a = args(&["x"]);
    a.output = Some("out/My Img".into());
    assert_eq!(build(&a, &env(&[])).unwrap().docker_target, "my-img:latest");
    a.push = Some("registry.example/team/vm:2".into());
    assert_eq!(build(&a, &env(&[])).unwrap().docker_target, "team/vm:2");
    a.push = Some("localhost:5000/vm".into());
    assert_eq!(build(&a, &env(&[])).unwrap().docker_target, "vm:latest");
    a.docker_target = Some("dib/other:1".into());
    assert_eq!(build(&a, &env(&[])).unwrap().docker_target, "dib/other:1");
}
