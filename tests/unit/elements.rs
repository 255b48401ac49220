//! Element discovery and dependency expansion, table-driven.

use crate::common::{empty_dir, real, Fixture};
use dib::elements::{resolve, ElementSet};

type El<'a> = (&'a str, &'a [&'a str], &'a [&'a str]);

struct Case<'a> {
    name: &'a str,
    elements: &'a [El<'a>],
    request: &'a [&'a str],
    arch: &'a str,
    /// Ok(expanded names) or Err(exact message, with the search path as {path}).
    want: Result<&'a [&'a str], &'a str>,
}

const OS: El = ("os", &[], &["operating-system"]);

fn cases() -> Vec<Case<'static>> {
    vec![
        Case {
            name: "transitive dependencies, sorted by name",
            elements: &[OS, ("c", &[], &[]), ("a", &["b"], &[]), ("b", &["c"], &[])],
            request: &["os", "a"],
            arch: "amd64",
            want: Ok(&["a", "b", "c", "os"]),
        },
        Case {
            name: "circular dependencies are allowed",
            elements: &[OS, ("a", &["b"], &[]), ("b", &["a"], &[])],
            request: &["a", "os"],
            arch: "amd64",
            want: Ok(&["a", "b", "os"]),
        },
        Case {
            name: "self dependency is allowed",
            elements: &[OS, ("a", &["a"], &[])],
            request: &["a", "os"],
            arch: "amd64",
            want: Ok(&["a", "os"]),
        },
        Case {
            name: "a repeated request is one element",
            elements: &[OS, ("a", &[], &[])],
            request: &["a", "os", "a"],
            arch: "amd64",
            want: Ok(&["a", "os"]),
        },
        Case {
            name: "missing dependency names the element that asked",
            elements: &[OS, ("a", &["b"], &[]), ("b", &["nope"], &[])],
            request: &["a", "os"],
            arch: "amd64",
            want: Err("Element 'nope' not found (required by 'b'); searched {path}. Add the directory that holds it to ELEMENTS_PATH"),
        },
        Case {
            name: "missing requested element says it came from the command line",
            elements: &[OS],
            request: &["os", "nope"],
            arch: "amd64",
            want: Err("Element 'nope' not found (requested on the command line); searched {path}. Add the directory that holds it to ELEMENTS_PATH"),
        },
        Case {
            name: "two elements providing one name",
            elements: &[OS, ("p1", &[], &["virt"]), ("p2", &[], &["virt"]), ("a", &["p1", "p2"], &[])],
            request: &["a", "os"],
            arch: "amd64",
            want: Err("virt: already provided by [p1], and 'p2' provides it too; include only one of them"),
        },
        Case {
            name: "two operating systems",
            elements: &[OS, ("os2", &[], &["operating-system"])],
            request: &["os", "os2"],
            arch: "amd64",
            want: Err("operating-system: already provided by [os], and 'os2' provides it too; include only one of them"),
        },
        Case {
            name: "explicitly requested element also provided by another",
            elements: &[OS, ("x", &[], &[]), ("y", &[], &["x"])],
            request: &["os", "x", "y"],
            arch: "amd64",
            want: Err("Element 'x' was requested explicitly but is already provided by [y]; request only one of them"),
        },
        Case {
            name: "no operating system",
            elements: &[("a", &[], &[])],
            request: &["a"],
            arch: "amd64",
            want: Err("Please include an operating system element (one whose element-provides lists 'operating-system', such as debian-minimal)"),
        },
        Case {
            name: "operating system provided deep in the closure",
            elements: &[("a", &["b"], &[]), ("b", &["c"], &[]), ("c", &[], &["operating-system"])],
            request: &["a"],
            arch: "amd64",
            want: Ok(&["a", "b", "c"]),
        },
        Case {
            // DIB's BFS looks 'virt' up as a real element before it reaches
            // 'p' (three levels down) and fails with "Element 'virt' not found".
            name: "virtual provided by an element reached late in breadth-first order",
            elements: &[
                OS,
                ("a", &["virt", "m1"], &[]),
                ("m1", &["m2"], &[]),
                ("m2", &["m3"], &[]),
                ("m3", &["p"], &[]),
                ("p", &[], &["virt"]),
            ],
            request: &["a", "os"],
            arch: "amd64",
            want: Ok(&["a", "m1", "m2", "m3", "os", "p"]),
        },
        Case {
            name: "a provider replaces a real element of the same name",
            elements: &[
                OS,
                ("a", &["virt", "b"], &[]),
                ("b", &["p"], &[]),
                ("p", &[], &["virt"]),
                ("virt", &["junk"], &[]),
                ("junk", &[], &[]),
            ],
            request: &["a", "os"],
            arch: "amd64",
            want: Ok(&["a", "b", "os", "p"]),
        },
        Case {
            name: "a virtual whose only provider hangs off the virtual itself",
            elements: &[OS, ("a", &["x"], &[]), ("x", &["p"], &[]), ("p", &[], &["x"])],
            request: &["a", "os"],
            arch: "amd64",
            want: Err("'x' is provided by an element that is only reached through 'x' itself, so whether it is virtual has no consistent answer; depend on its provider directly"),
        },
        Case {
            // A provider reached only through a real element that a second
            // provider replaces drops out, and its name with it.
            name: "a provider that drops out takes its virtual name with it",
            elements: &[
                OS,
                ("a", &["z", "q", "x"], &[]),
                ("z", &["p"], &[]),
                ("p", &[], &["x"]),
                ("q", &[], &["z"]),
                ("x", &[], &[]),
            ],
            request: &["a", "os"],
            arch: "amd64",
            want: Ok(&["a", "os", "q", "x"]),
        },
        Case {
            name: "a requested element that provides its own name",
            elements: &[OS, ("x", &[], &["x"])],
            request: &["os", "x"],
            arch: "amd64",
            want: Err("Element 'x' was requested explicitly but is already provided by [x]; request only one of them"),
        },
        Case {
            name: "a repeated line in element-provides is one name",
            elements: &[("os", &[], &["operating-system", "operating-system"]), ("a", &["a", "a"], &[])],
            request: &["os", "a"],
            arch: "amd64",
            want: Ok(&["a", "os"]),
        },
        Case {
            name: "vm gets block-device-mbr on amd64",
            elements: &[OS, ("vm", &[], &[]), ("block-device-mbr", &[], &[]), ("block-device-efi", &[], &[])],
            request: &["os", "vm"],
            arch: "amd64",
            want: Ok(&["block-device-mbr", "os", "vm"]),
        },
        Case {
            name: "vm gets block-device-efi on arm64",
            elements: &[OS, ("vm", &[], &[]), ("block-device-mbr", &[], &[]), ("block-device-efi", &[], &[])],
            request: &["os", "vm"],
            arch: "arm64",
            want: Ok(&["block-device-efi", "os", "vm"]),
        },
        Case {
            name: "vm keeps a requested block device",
            elements: &[OS, ("vm", &[], &[]), ("block-device-mbr", &[], &[]), ("block-device-gpt", &[], &[])],
            request: &["os", "vm", "block-device-gpt"],
            arch: "amd64",
            want: Ok(&["block-device-gpt", "os", "vm"]),
        },
        Case {
            name: "vm keeps a block device pulled in by a dependency",
            elements: &[OS, ("vm", &[], &[]), ("block-device-mbr", &[], &[]), ("block-device-gpt", &[], &[]), ("x", &["block-device-gpt"], &[])],
            request: &["os", "vm", "x"],
            arch: "amd64",
            want: Ok(&["block-device-gpt", "os", "vm", "x"]),
        },
        Case {
            name: "vm's default block device must exist",
            elements: &[OS, ("vm", &[], &[])],
            request: &["os", "vm"],
            arch: "amd64",
            want: Err("Element 'block-device-mbr' not found (the default block device of 'vm' on amd64); searched {path}. Add the directory that holds it to ELEMENTS_PATH"),
        },
    ]
}

#[test]
fn dependency_rules() {
    for case in cases() {
        let f = Fixture::new();
        for (name, deps, provides) in case.elements {
            f.element("e", name, deps, provides);
        }
        let set = ElementSet::scan(vec![f.path("e")]).unwrap();
        let request: Vec<String> = case.request.iter().map(|s| s.to_string()).collect();
        let got = resolve(&set, &request, case.arch);
        match (&case.want, got) {
            (Ok(want), Ok(res)) => {
                assert_eq!(res.names().collect::<Vec<_>>(), *want, "{}", case.name);
                for e in &res.elements {
                    assert_eq!(e.path, real(&f.path("e").join(&e.name)), "{}", case.name);
                }
            }
            (Err(want), Err(err)) => {
                let want = want.replace("{path}", &f.path("e").display().to_string());
                assert_eq!(err.to_string(), want, "{}", case.name);
            }
            (want, got) => panic!("{}: want {want:?}, got {got:?}", case.name),
        }
    }
}

#[test]
fn result_does_not_depend_on_request_order() {
    let f = Fixture::new();
    for (name, deps, provides) in [
        OS,
        ("a", &["c"][..], &[][..]),
        ("b", &["a"], &[]),
        ("c", &[], &["v"]),
    ] {
        f.element("e", name, deps, provides);
    }
    let set = ElementSet::scan(vec![f.path("e")]).unwrap();
    let one = resolve(&set, &["os".into(), "a".into(), "b".into()], "amd64").unwrap();
    let two = resolve(&set, &["b".into(), "a".into(), "os".into()], "amd64").unwrap();
    assert_eq!(one, two);
    assert_eq!(one.provided.get("v").map(String::as_str), Some("c"));
}

#[test]
fn comments_and_bad_names_in_element_deps() {
    let f = Fixture::new();
    f.element("e", "os", &[], &["operating-system"]);
    f.element("e", "b", &[], &[]);
    f.file("e/a/element-deps", "# a comment\n\n  b\n", 0o644);
    let set = ElementSet::scan(vec![f.path("e")]).unwrap();
    let res = resolve(&set, &["a".into(), "os".into()], "amd64").unwrap();
    assert_eq!(res.names().collect::<Vec<_>>(), ["a", "b", "os"]);

    f.file("e/a/element-deps", "b\nc d\n", 0o644);
    let err = resolve(&set, &["a".into(), "os".into()], "amd64").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: \"c d\" is not a valid element name (one name a line; '#' starts a comment)",
            f.path("e/a/element-deps").display()
        )
    );
}

#[test]
fn first_path_entry_wins_and_shadowing_is_reported() {
    let f = Fixture::new();
    f.element("one", "x", &[], &["operating-system"]);
    f.element("two", "x", &["never"], &[]);
    f.element("two", "y", &[], &[]);
    f.element("shipped", "y", &[], &[]);
    f.element("shipped", "base", &[], &[]);
    let path = format!("{}:{}", f.path("one").display(), f.path("two").display());
    let set = ElementSet::discover(Some(&path), &f.path("shipped")).unwrap();
    let res = resolve(&set, &["x".into(), "y".into(), "base".into()], "amd64").unwrap();
    let paths: Vec<_> = res
        .elements
        .iter()
        .map(|e| (e.name.as_str(), e.path.clone()))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("base", real(&f.path("shipped/base"))),
            ("x", real(&f.path("one/x"))),
            ("y", real(&f.path("two/y"))),
        ]
    );
    let warnings: Vec<String> = set.shadowed().iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        vec![
            format!(
                "element 'x' at {} shadows {} (the first ELEMENTS_PATH entry wins)",
                f.path("one/x").display(),
                f.path("two/x").display()
            ),
            format!(
                "element 'y' at {} shadows {} (the first ELEMENTS_PATH entry wins)",
                f.path("two/y").display(),
                f.path("shipped/y").display()
            ),
        ]
    );
    assert_eq!(
        set.search_path(),
        [f.path("one"), f.path("two"), f.path("shipped")]
    );
}

#[test]
fn shipped_tree_listed_explicitly_is_not_searched_twice() {
    let f = Fixture::new();
    f.element("shipped", "base", &[], &[]);
    let path = format!("::{}:", f.path("shipped").display());
    let set = ElementSet::discover(Some(&path), &f.path("shipped")).unwrap();
    assert!(set.shadowed().is_empty());
    assert_eq!(set.search_path(), [f.path("shipped")]);
}

#[test]
fn the_same_directory_twice_is_searched_once() {
    let f = Fixture::new();
    f.element("e", "x", &[], &[]);
    let path = format!("{0}:{0}/:{0}/../e", f.path("e").display());
    let set = ElementSet::discover(Some(&path), &empty_dir(&f)).unwrap();
    assert!(set.shadowed().is_empty(), "{:?}", set.shadowed());
    assert_eq!(set.search_path(), [f.path("e"), empty_dir(&f)]);
}

#[test]
fn path_entry_that_is_not_a_directory() {
    let f = Fixture::new();
    let file = f.file("not-a-dir", "", 0o644);
    for bad in [file, f.path("missing")] {
        let err =
            ElementSet::discover(Some(&bad.display().to_string()), &empty_dir(&f)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("ELEMENTS_PATH entry {bad:?} is not a directory; fix or remove it")
        );
    }
}

#[test]
fn hidden_entries_and_files_are_not_elements() {
    let f = Fixture::new();
    f.element("e", ".git", &[], &[]);
    f.element("e", "real", &[], &[]);
    f.file("e/README", "not an element", 0o644);
    let set = ElementSet::scan(vec![f.path("e")]).unwrap();
    assert_eq!(
        set.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["real"]
    );
}
