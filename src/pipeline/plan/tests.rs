use std::path::PathBuf;

use super::*;
use crate::blockdev::{Backend, DiskJob};
use crate::config::OutputType;
use crate::pipeline::outputs::{Output, Settings};
use crate::ramdisk::RamdiskJob;
use Phase::*;

/// A job with the given outputs and nothing else asked for.
fn job(outputs: &[OutputType]) -> BuildJob {
    BuildJob {
        host_ca: None,
        build_dir: PathBuf::from("/tmp/dib_build.x"),
        tmpfs: false,
        hooks: Default::default(),
        env: Default::default(),
        args: String::new(),
        element_array: String::new(),
        breakpoints: vec![],
        trace: 0,
        logfile: None,
        final_image: true,
        quiet: true,
        outputs: outputs
            .iter()
            .map(|k| Output {
                kind: *k,
                path: PathBuf::from("/o/image"),
            })
            .collect(),
        output_settings: Settings {
            overwrite: false,
            compress: true,
            qemu_img_options: vec![],
            reproducible: false,
            checksum: false,
            docker_target: "image:latest".into(),
        },
        disk: outputs
            .iter()
            .any(|t| t.from_disk())
            .then(|| disk(Backend::Offline)),
        ramdisk: None,
        packages: vec![],
        package_lists: Default::default(),
        boxing: Default::default(),
        exe: "/usr/bin/dib".into(),
        layer_cache: None,
        source_date_epoch: None,
    }
}

fn disk(backend: Backend) -> DiskJob {
    DiskJob {
        config: crate::blockdev::config::default_config(),
        origin: "t".into(),
        options: crate::blockdev::Options {
            helper: backend.mounts_filesystems(),
            ..crate::blockdev::test_options()
        },
        backend,
        uuid_seed: None,
    }
}

fn hooks(phase: Phase) -> Step {
    Step::Hooks {
        phase,
        shell_on_error: false,
    }
}

/// The steps every build has in every phase, with `extra` after the
/// phase's hooks.
fn phases(extra: &[(Phase, Step)]) -> Vec<Step> {
    let mut steps = Vec::new();
    for p in PHASES {
        if p == PreInstall {
            steps.push(Step::PackageLists);
        }
        steps.push(hooks(p));
        if p == Root {
            steps.push(Step::CheckTree);
        }
        steps.extend(extra.iter().filter(|(at, _)| *at == p).map(|(_, s)| *s));
    }
    steps
}

#[test]
fn the_plan_follows_the_job() {
    let with = |mut j: BuildJob, f: &dyn Fn(&mut BuildJob)| {
        f(&mut j);
        j
    };
    let tail = |steps: &[Step]| -> Vec<Step> {
        let mut all = phases(&[]);
        all.extend_from_slice(steps);
        all
    };
    // (what, job, expected plan)
    let cases: Vec<(&str, BuildJob, Vec<Step>)> = vec![
        (
            "a tar",
            job(&[OutputType::Tar]),
            tail(&[Step::TreeOutputs, Step::NameOutputs]),
        ),
        (
            "a qcow2, offline",
            job(&[OutputType::Qcow2]),
            [
                phases(&[(BlockDevice, Step::LayOutDisk)]),
                vec![Step::WriteFilesystems, Step::DiskOutputs, Step::NameOutputs],
            ]
            .concat(),
        ),
        (
            "a qcow2 and a tar through dib-helper",
            with(job(&[OutputType::Qcow2, OutputType::Tar]), &|j| {
                j.disk = Some(disk(Backend::Helper {
                    socket: "/run/dib-helper.sock".into(),
                }))
            }),
            [
                phases(&[
                    (BlockDevice, Step::LayOutDisk),
                    (PreFinalise, Step::MountImage),
                ]),
                vec![
                    Step::TreeOutputs,
                    Step::WriteFilesystems,
                    Step::DiskOutputs,
                    Step::NameOutputs,
                ],
            ]
            .concat(),
        ),
        (
            "no-final-image: no disk, no outputs",
            with(job(&[OutputType::Qcow2]), &|j| j.final_image = false),
            tail(&[Step::NoImage]),
        ),
        (
            "a ramdisk",
            with(job(&[]), &|j| {
                j.ramdisk = Some(RamdiskJob {
                    kernel: "/o/r.kernel".into(),
                    initramfs: "/o/r.initramfs".into(),
                })
            }),
            tail(&[Step::Ramdisk, Step::NameOutputs]),
        ),
        (
            "-p",
            with(job(&[OutputType::Tar]), &|j| {
                j.packages = vec!["vim".into()]
            }),
            [
                phases(&[(Install, Step::ExtraPackages)]),
                vec![Step::TreeOutputs, Step::NameOutputs],
            ]
            .concat(),
        ),
    ];
    for (what, job, want) in cases {
        assert_eq!(plan(&job), want, "{what}");
    }
}

#[test]
fn break_points_open_shells_where_they_are_set() {
    let mut j = job(&[OutputType::Tar]);
    j.packages = vec!["vim".into()];
    j.breakpoints = vec![
        Breakpoint::Before(Install),
        Breakpoint::After(Install),
        Breakpoint::After(Root),
        Breakpoint::AfterError,
    ];
    let steps = plan(&j);
    let at = |s: Step| steps.iter().position(|x| *x == s).unwrap();
    let on_error = |phase| Step::Hooks {
        phase,
        shell_on_error: true,
    };
    let before = Step::Break {
        at: Breakpoint::Before(Install),
        phase: Install,
    };
    let after = Step::Break {
        at: Breakpoint::After(Install),
        phase: Install,
    };
    // before-install, install.d, -p, after-install, in that order.
    assert_eq!(at(before) + 1, at(on_error(Install)));
    assert_eq!(at(on_error(Install)) + 1, at(Step::ExtraPackages));
    assert_eq!(at(Step::ExtraPackages) + 1, at(after));
    // after-root comes before root.d's check of the tree.
    let after_root = Step::Break {
        at: Breakpoint::After(Root),
        phase: Root,
    };
    assert_eq!(at(after_root) + 1, at(Step::CheckTree));
    // after-error: every phase's hooks open the shell on a failure.
    let hooks: Vec<_> = steps
        .iter()
        .filter(|s| matches!(s, Step::Hooks { .. }))
        .collect();
    assert_eq!(hooks.len(), PHASES.len());
    assert!(hooks.iter().all(|s| matches!(
        s,
        Step::Hooks {
            shell_on_error: true,
            ..
        }
    )));
    // A break shell of a chroot phase runs in the chroot.
    assert!(before.in_chroot() && after.in_chroot() && !after_root.in_chroot());
}

#[test]
fn steps_run_in_the_chroot_as_their_phase_does() {
    for s in plan(&job(&[OutputType::Qcow2, OutputType::Tar])) {
        let want = match s {
            Step::Hooks { phase, .. } => phase.chroot(),
            _ => false,
        };
        assert_eq!(s.in_chroot(), want, "{s:?}");
    }
    assert!(Step::ExtraPackages.in_chroot());
}
