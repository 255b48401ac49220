#![allow(clippy::type_complexity)] // inline case tables read better than named types

use super::*;

fn target(r: &str, insecure: bool) -> PushTarget {
    PushTarget::parse(r, false, insecure).unwrap()
}

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn out(kind: OutputType, path: &str) -> Output {
    Output {
        kind,
        path: PathBuf::from(path),
    }
}

#[test]
fn targets_name_their_origin_and_refuse_digests() {
    let t = PushTarget::parse("localhost:5000/dib/x:1", true, false).unwrap();
    assert_eq!(t.named(), "DIB_PUSH=localhost:5000/dib/x:1");
    assert_eq!(
        target("docker://localhost:5000/x", false).named(),
        "--push localhost:5000/x"
    );
    let e = PushTarget::parse("x:1", false, false).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "invalid value \"x:1\" for '--push <REF>': the image reference \"x:1\" names no \
         registry: use HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]"
    );
    let d = format!("registry.example/x@sha256:{}", "a".repeat(64));
    let e = PushTarget::parse(&d, true, false).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "DIB_PUSH={d:?} is not valid: a push names a tag, not a digest (the registry gives \
             the pushed image its digest): use HOST[:PORT]/REPOSITORY[:TAG]"
        )
    );
}

#[test]
fn tls_and_ports_follow_the_registry_and_insecure() {
    // (reference, --push-insecure, TLS verified, ports tried)
    let cases: &[(&str, bool, bool, &[u16])] = &[
        ("registry.example/x", false, true, &[443]),
        ("registry.example/x", true, false, &[443, 80]),
        ("registry.example:5000/x", true, false, &[5000]),
        ("localhost/x", false, false, &[443, 80]),
        ("127.0.0.1:5000/x", false, false, &[5000]),
        ("[::1]:5000/x", false, false, &[5000]),
    ];
    for &(r, insecure, verify, ports) in cases {
        let t = target(r, insecure);
        assert_eq!(
            (t.tls_verify(), t.ports().as_slice()),
            (verify, ports),
            "{r}"
        );
    }
}

#[test]
fn only_container_outputs_are_pushed_and_only_one() {
    let t = target("registry.example/x:1", false);
    let oci = out(OutputType::Oci, "/o/img.oci");
    let tar = out(OutputType::Tar, "/o/img.tar");
    assert_eq!(source(&oci).as_deref(), Some("oci:/o/img.oci"));
    assert_eq!(source(&tar), None);
    let both = [tar.clone(), oci.clone()];
    assert_eq!(choose(&t, &both).unwrap(), &oci);
    assert_eq!(
        choose(&t, std::slice::from_ref(&tar))
            .unwrap_err()
            .to_string(),
        "--push needs an OCI output: add -t oci (a container image) or -t containerdisk \
         (a VM disk for KubeVirt)"
    );
    // oci, oci-archive and docker are one image: the layout is pushed.
    let docker = out(OutputType::Docker, "/o/img.docker.tar");
    let archive = out(OutputType::OciArchive, "/o/img.oci.tar");
    assert_eq!(
        source(&docker).as_deref(),
        Some("docker-archive:/o/img.docker.tar")
    );
    assert_eq!(
        source(&archive).as_deref(),
        Some("oci-archive:/o/img.oci.tar")
    );
    let same = [docker.clone(), archive.clone(), oci.clone()];
    assert_eq!(choose(&t, &same).unwrap(), &oci);
    assert_eq!(
        choose(&t, &[docker.clone(), archive]).unwrap().kind,
        OutputType::OciArchive
    );
    let disk = out(OutputType::ContainerDisk, "/o/img.containerdisk");
    assert_eq!(source(&disk).as_deref(), Some("oci:/o/img.containerdisk"));
    let two = [oci, docker, disk];
    assert_eq!(
        choose(&t, &two).unwrap_err().to_string(),
        "--push pushes one image, and this build writes 2 that could be pushed: \
         /o/img.oci (-t oci), /o/img.containerdisk (-t containerdisk); keep only the one to \
         push in -t (build the others without --push)"
    );
}

#[test]
fn proxies_apply_unless_loopback_or_no_proxy() {
    let p = "http://proxy.example:3128";
    // (reference, insecure, environment, proxied)
    let cases: &[(&str, bool, &[(&str, &str)], bool)] = &[
        ("registry.example/x", false, &[], false),
        ("registry.example/x", false, &[("https_proxy", p)], true),
        ("registry.example/x", false, &[("HTTPS_PROXY", p)], true),
        ("registry.example/x", false, &[("HTTPS_PROXY", " ")], false),
        ("registry.example/x", false, &[("http_proxy", p)], false),
        ("registry.example/x", true, &[("http_proxy", p)], true),
        ("localhost:5000/x", false, &[("https_proxy", p)], false),
        ("127.0.0.1:5000/x", true, &[("https_proxy", p)], false),
        (
            "registry.example/x",
            false,
            &[("https_proxy", p), ("no_proxy", "*")],
            false,
        ),
        (
            "registry.example/x",
            false,
            &[("https_proxy", p), ("NO_PROXY", "a.b, registry.example")],
            false,
        ),
        (
            "registry.example/x",
            false,
            &[("https_proxy", p), ("no_proxy", "example")],
            false,
        ),
        (
            "registry.example/x",
            false,
            &[("https_proxy", p), ("no_proxy", ".example")],
            false,
        ),
        (
            "registry.example/x",
            false,
            &[("https_proxy", p), ("no_proxy", "*.example")],
            false,
        ),
        (
            "registry.example:5000/x",
            false,
            &[("https_proxy", p), ("no_proxy", "registry.example:5000")],
            false,
        ),
        (
            "registry.example/x",
            false,
            &[("https_proxy", p), ("no_proxy", "ample")],
            true,
        ),
        (
            "registry.example/x",
            false,
            &[("https_proxy", p), ("no_proxy", "other.example")],
            true,
        ),
    ];
    for &(r, insecure, e, proxied) in cases {
        assert_eq!(
            proxy_for(&target(r, insecure), &env(e)).is_some(),
            proxied,
            "{r} {insecure} {e:?}"
        );
    }
}

#[test]
fn an_unreachable_registry_is_named_with_the_reason() {
    // Port 1 on the loopback: nothing listens there.
    let e = reach(&target("127.0.0.1:1/x:1", false)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot reach the registry 127.0.0.1:1 of --push 127.0.0.1:1/x:1: connection refused; \
         start it, or check the reference"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    reach(&target(&format!("127.0.0.1:{port}/x:1"), false)).unwrap();
}

#[test]
fn skopeo_is_told_tls_auth_and_where_the_digest_goes() {
    let push = |r: &str, authfile: Option<&str>, has_policy| Push {
        target: target(r, false),
        output: out(OutputType::Oci, "/o/my img.oci"),
        source: "oci:/o/my img.oci".into(),
        skopeo: PathBuf::from("/usr/bin/skopeo"),
        authfile: authfile.map(PathBuf::from),
        has_policy,
    };
    let p = push("localhost:5000/x:1", Some("/a/auth.json"), true);
    assert_eq!(
        p.args(
            Some(Path::new("/t/policy.json")),
            Some(Path::new("/t/d")),
            true
        ),
        [
            "--policy",
            "/t/policy.json",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--authfile",
            "/a/auth.json",
            "--digestfile",
            "/t/d",
            "oci:/o/my img.oci",
            "docker://localhost:5000/x:1"
        ]
    );
    assert_eq!(
        p.by_hand(),
        "skopeo copy --preserve-digests --dest-tls-verify=false --authfile /a/auth.json 'oci:/o/my img.oci' \
         docker://localhost:5000/x:1"
    );
    let p = push("registry.example/x:1", None, false);
    assert_eq!(
        p.by_hand(),
        "skopeo --insecure-policy copy --preserve-digests 'oci:/o/my img.oci' \
         docker://registry.example/x:1"
    );
}

#[test]
fn io_errors_read_as_words() {
    let e = std::io::Error::from_raw_os_error(111);
    assert_eq!(io_reason(&e), "connection refused");
    let e = std::io::Error::from(std::io::ErrorKind::TimedOut);
    assert_eq!(io_reason(&e), "no answer within 3 s");
    assert_eq!(shell_word("it's"), r"'it'\''s'");
}
