//! Fuzzing the helper's message decoder (proptest): whatever bytes a hostile
//! client sends, decoding returns a message or an error, never panics, and
//! a decoded request re-encodes to the same message. The corpus
//! (tests/corpus/proto/) keeps the interesting inputs: every message type,
//! and the packets that once tried the decoder's edges (deep nesting, huge
//! numbers, lone surrogates, bytes that are not UTF-8, unknown fields: in
//! a request, beside the tag of one without data, and inside a table, a
//! partition entry and an mkfs spec), each decoding or refused as it must.
//! Inputs proptest finds failing are kept by it in
//! `proptest-regressions/`, beside this file; commit them.

use std::path::PathBuf;

use dib_sandbox::mkfs::{FsType, MkfsSpec};
use dib_sandbox::proto::{decode, Reply, Request};
use dib_sandbox::table::{Entry, Kind, Label, Table};
use proptest::prelude::*;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/proto");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Decode as both directions' messages; a request that decodes must
/// survive a round trip.
fn exercise(bytes: &[u8]) {
    if let Ok(r) = decode::<Request>(bytes) {
        let again = serde_json::to_vec(&r).unwrap();
        assert_eq!(decode::<Request>(&again).unwrap(), r);
    }
    let _ = decode::<Reply>(bytes);
}

#[test]
fn the_corpus_decodes_as_expected() {
    let valid = [
        "attach.json",
        "detach-max.json",
        "hello.json",
        "mkfs.json",
        "mount.json",
        "partitions.json",
        "ping.json",
    ];
    let corpus = corpus();
    assert!(corpus.len() >= 18, "the corpus lost files");
    for (name, bytes) in corpus {
        exercise(&bytes);
        let ok = decode::<Request>(&bytes).is_ok();
        assert_eq!(ok, valid.contains(&name.as_str()), "{name}");
    }
}

fn any_label() -> impl Strategy<Value = Label> {
    prop_oneof![Just(Label::Mbr), Just(Label::Gpt)]
}

fn any_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Linux),
        Just(Kind::Esp),
        Just(Kind::BiosBoot),
        Just(Kind::Swap),
        Just(Kind::Lvm),
        any::<u8>().prop_map(Kind::Mbr),
    ]
}

fn any_fs() -> impl Strategy<Value = FsType> {
    prop_oneof![
        Just(FsType::Ext2),
        Just(FsType::Ext3),
        Just(FsType::Ext4),
        Just(FsType::Xfs),
        Just(FsType::Vfat),
        Just(FsType::Swap),
    ]
}

fn any_request() -> impl Strategy<Value = Request> {
    let entry = (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any_kind(),
        any::<bool>(),
        ".{0,40}",
        ".{0,40}",
    )
        .prop_map(|(number, start, size, kind, bootable, name, guid)| Entry {
            number,
            start,
            size,
            kind,
            bootable,
            name,
            guid,
        });
    let table = (any_label(), ".{0,40}", prop::collection::vec(entry, 0..6)).prop_map(
        |(label, disk_id, entries)| Table {
            label,
            disk_id,
            entries,
        },
    );
    let spec = (
        any_fs(),
        prop::option::of(".{0,20}"),
        ".{0,40}",
        any::<u64>(),
        prop::option::of(any::<u64>()),
        prop::collection::vec(".{0,20}", 0..4),
        prop::collection::vec(".{0,20}", 0..6),
    )
        .prop_map(
            |(fs, label, uuid, size, journal, extended, options)| MkfsSpec {
                fs,
                label,
                uuid,
                size,
                journal,
                max_online_resize: None,
                extended,
                options,
            },
        );
    prop_oneof![
        any::<u32>().prop_map(|version| Request::Hello { version }),
        any::<bool>().prop_map(|read_only| Request::AttachLoop { read_only }),
        (any::<u32>(), table)
            .prop_map(|(handle, table)| Request::WritePartitions { handle, table }),
        (any::<u32>(), any::<u32>(), spec).prop_map(|(handle, partition, spec)| Request::Mkfs {
            handle,
            partition,
            spec
        }),
        (any::<u32>(), any::<u32>(), any_fs()).prop_map(|(handle, partition, fs)| {
            Request::MountIdmapped {
                handle,
                partition,
                fs,
            }
        }),
        any::<u32>().prop_map(|handle| Request::Detach { handle }),
        Just(Request::Ping {}),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn every_request_round_trips(req in any_request()) {
        let bytes = serde_json::to_vec(&req).unwrap();
        prop_assert_eq!(decode::<Request>(&bytes).unwrap(), req.clone());
        // The helper's checks of what a request carries never panic.
        match req {
            Request::WritePartitions { table, .. } => {
                let _ = table.check(u64::MAX);
                let _ = table.check(64 << 20);
                let _ = table.check(0);
            }
            Request::Mkfs { spec, .. } => {
                let _ = spec.check();
            }
            _ => {}
        }
    }

    /// Options of any characters (the check once sliced a multi-byte
    /// character in two and panicked).
    #[test]
    fn mkfs_option_checks_never_panic(
        fs in any_fs(),
        options in prop::collection::vec("-?\\PC{0,6}", 0..6),
    ) {
        let spec = MkfsSpec {
            fs,
            label: None,
            uuid: "6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e".into(),
            size: 1 << 30,
            journal: None,
            max_online_resize: None,
            extended: vec![],
            options,
        };
        let _ = spec.check();
    }

    /// Valid messages with bytes flipped, cut short or spliced together.
    #[test]
    fn mutated_messages_never_panic(
        req in any_request(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        seed in any::<prop::sample::Index>(),
    ) {
        let mut bytes = serde_json::to_vec(&req).unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        exercise(&bytes);
        let keep = cut.index(bytes.len() + 1);
        exercise(&bytes[..keep]);
        let corpus = corpus();
        let (_, other) = &corpus[seed.index(corpus.len())];
        let mut spliced = bytes[..keep].to_vec();
        spliced.extend_from_slice(&other[other.len() / 2..]);
        exercise(&spliced);
    }
}
