use super::*;

fn key(n: u8, network: bool) -> StepKey {
    StepKey {
        key: crate::oci::hex(&[n; 32]),
        network,
        stores: true,
    }
}

fn cache(dir: &Path) -> CacheJob {
    CacheJob {
        dir: dir.join(LAYERS_DIR),
        max_bytes: DEFAULT_MAX_BYTES,
        max_age: Some(DEFAULT_MAX_AGE),
    }
}

/// A build directory with `built/` holding `files`.
fn build_dir(root: &Path, files: &[(&str, &str)]) -> PathBuf {
    let b = root.join("build");
    fs::create_dir_all(b.join("built")).unwrap();
    for (name, text) in files {
        let p = b.join("built").join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    b
}

#[test]
fn a_stored_layer_is_found_checked_and_unpacked_elsewhere() {
    let t = tempfile::tempdir().unwrap();
    let c = cache(t.path());
    let b = build_dir(t.path(), &[("etc/a", "one"), ("etc/gone", "x")]);
    let base = Manifest::scan(&b, &[]).unwrap();
    fs::write(b.join("built/etc/a"), "two").unwrap();
    fs::write(b.join("built/new"), "n").unwrap();
    fs::remove_file(b.join("built/etc/gone")).unwrap();
    let now = Manifest::scan(&b, &[]).unwrap();
    let diff = base.diff(&now);
    let env: BTreeMap<String, String> = [("K".to_string(), "v".to_string())].into();
    let k = key(1, false);
    c.store(&k, &b, &diff, Some(&env)).unwrap();
    assert!(
        c.find(&key(2, false)).is_none(),
        "another key finds nothing"
    );
    let mut f = c.find(&k).expect("the stored layer");
    assert!(c.verify(&mut f).unwrap());
    assert_eq!(f.file.sourced.as_ref(), Some(&env));

    // Applied on a copy of the tree as it was before the step.
    let other = t.path().join("other");
    fs::create_dir_all(other.join("built/etc")).unwrap();
    fs::write(other.join("built/etc/a"), "one").unwrap();
    fs::write(other.join("built/etc/gone"), "x").unwrap();
    unpack(&f, &other).unwrap();
    assert_eq!(
        fs::read_to_string(other.join("built/etc/a")).unwrap(),
        "two"
    );
    assert_eq!(fs::read_to_string(other.join("built/new")).unwrap(), "n");
    assert!(!other.join("built/etc/gone").exists());
}

#[test]
fn a_damaged_or_truncated_layer_is_never_used() {
    let t = tempfile::tempdir().unwrap();
    let c = cache(t.path());
    let b = build_dir(t.path(), &[("f", &"data".repeat(1000))]);
    let diff = Manifest::default().diff(&Manifest::scan(&b, &[]).unwrap());
    let k = key(3, false);
    c.store(&k, &b, &diff, None).unwrap();
    let blob = c.blob_path(&c.find(&k).unwrap().file.blob);
    // Same size, one byte flipped: found, then refused by its hash and
    // its key removed.
    let mut bytes = fs::read(&blob).unwrap();
    bytes[600] ^= 1;
    fs::write(&blob, &bytes).unwrap();
    let mut f = c.find(&k).unwrap();
    assert!(!c.verify(&mut f).unwrap());
    assert!(c.find(&k).is_none());
    // Truncated: not even found.
    c.store(&k, &b, &diff, None).unwrap();
    let blob = c.blob_path(&c.find(&k).unwrap().file.blob);
    let f = File::options().write(true).open(&blob).unwrap();
    f.set_len(512).unwrap();
    assert!(c.find(&k).is_none());
}

#[test]
fn a_layer_of_a_network_step_ages_and_an_offline_build_reuses_it() {
    let t = tempfile::tempdir().unwrap();
    let mut c = cache(t.path());
    let b = build_dir(t.path(), &[("f", "x")]);
    let diff = Manifest::default().diff(&Manifest::scan(&b, &[]).unwrap());
    let k = key(4, true);
    c.store(&k, &b, &diff, None).unwrap();
    assert!(c.find(&k).is_some());
    c.max_age = Some(0);
    // Made "now": an age of 0 s is still within 0 unless a second passed;
    // backdate the key file instead.
    let path = c.key_path(&k.key);
    let mut file: KeyFile = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    file.created -= 10;
    fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    assert!(c.find(&k).is_none(), "too old for a step with network");
    let offline = CacheJob {
        max_age: None,
        ..c.clone()
    };
    assert!(offline.find(&k).is_some());
    let no_network = StepKey {
        network: false,
        ..k
    };
    assert!(
        c.find(&no_network).is_some(),
        "a step without network never ages"
    );
}

#[test]
fn clean_up_keeps_the_cache_in_its_size_and_leaves_live_partial_files() {
    let t = tempfile::tempdir().unwrap();
    let mut c = cache(t.path());
    let b = build_dir(t.path(), &[("f", &"z".repeat(100_000))]);
    let diff = Manifest::default().diff(&Manifest::scan(&b, &[]).unwrap());
    for n in 0..4 {
        // Different contents, different blobs.
        fs::write(b.join("built/f"), vec![b'a' + n; 100_000]).unwrap();
        c.store(&key(10 + n, false), &b, &diff, None).unwrap();
        let used = SystemTime::now() - Duration::from_secs(100 - u64::from(n));
        File::options()
            .append(true)
            .open(c.key_path(&key(10 + n, false).key))
            .unwrap()
            .set_modified(used)
            .unwrap();
    }
    // A partial file another build is writing (locked) stays; an
    // abandoned one goes.
    let live = Partial::create(&c.tmp(), "live", "tar").unwrap();
    fs::write(c.tmp().join("dead.1.2.tar"), "half").unwrap();
    c.max_bytes = 250_000;
    let done = c.clean().unwrap();
    assert_eq!(done.keys, 2, "the two least recently used go");
    assert!(c.find(&key(10, false)).is_none() && c.find(&key(11, false)).is_none());
    assert!(c.find(&key(12, false)).is_some() && c.find(&key(13, false)).is_some());
    assert!(done.total <= 250_000);
    assert!(live.path.exists());
    assert!(!c.tmp().join("dead.1.2.tar").exists());
}

#[test]
fn sizes_parse_with_binary_suffixes() {
    assert_eq!(parse_size("1024"), Some(1024));
    assert_eq!(parse_size("2K"), Some(2048));
    assert_eq!(parse_size("1.5G"), Some(3 << 29));
    assert_eq!(parse_size("20g"), Some(20 << 30));
    assert_eq!(parse_size("lots"), None);
    assert_eq!(parse_size("-1G"), None);
}

#[test]
fn the_cache_covers_the_steps_up_to_the_first_it_cannot_replay() {
    use super::super::plan::Step;
    use crate::config::Breakpoint;
    use crate::phases::Phase;
    let hooks = |phase| Step::Hooks {
        phase,
        shell_on_error: false,
    };
    let steps = [
        hooks(Phase::Root),
        Step::CheckTree,
        Step::PackageLists,
        hooks(Phase::Install),
        Step::ExtraPackages,
        hooks(Phase::BlockDevice),
        Step::LayOutDisk,
        hooks(Phase::Finalise),
    ];
    assert_eq!(keys::cacheable(&steps), 6);
    let with_break = [
        hooks(Phase::Root),
        Step::Break {
            at: Breakpoint::After(Phase::Root),
            phase: Phase::Root,
        },
        hooks(Phase::Install),
    ];
    assert_eq!(keys::cacheable(&with_break), 1);
}

#[test]
fn session_variables_are_not_part_of_the_key() {
    for k in ["TERM", "SSH_AUTH_SOCK", "XDG_RUNTIME_DIR", "PWD", "_"] {
        assert!(keys::is_session_noise(k), "{k}");
    }
    for k in ["DIB_RELEASE", "PATH", "HOME", "http_proxy", "IMAGE_NAME"] {
        assert!(!keys::is_session_noise(k), "{k}");
    }
    for k in [
        "DIB_NO_CACHE",
        "DIB_LAYER_CACHE_SIZE",
        "DIB_LAYER_CACHE_MAX_AGE",
    ] {
        assert!(keys::is_cache_setting(k), "{k}");
    }
    assert!(!keys::is_cache_setting("DIB_NO_TMPFS"));
}
