//! Tier 3, the root tier: dib-helper running as root, dib and a probe
//! client as the non-root test user (docs/testing.md).
//!
//! The harness runs as root: it starts helpers on sockets of its own, runs
//! dib as the test user, and looks at loop devices, mounts and the images
//! with root's tools. The probe client is this same binary, re-run as the
//! test user with `DIB_HELPER_PROBE=CASE`: it speaks the protocol directly,
//! to send what dib never would.

#[path = "../common/mod.rs"]
mod common;

mod backends;
mod fuse;
mod hostile;
mod image;
mod killed_builds;
mod mounts;
mod refusals;
mod socket;
mod support;

use common::tier::run_trials;
use support::{helper_bin, probe_main, test_user, PROBE_ENV};

fn skip_reason() -> Option<String> {
    if std::env::var("DIB_TIER3").as_deref() != Ok("1") {
        return Some("the root tier runs from scripts/test (as root, with DIB_TIER3=1)".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("the root tier runs as root (dib-helper needs it)".into());
    }
    let Some(u) = test_user() else {
        return Some("no test user (run scripts/prepare-host --test-user)".into());
    };
    if !helper_bin().is_file() {
        return Some(format!(
            "no dib-helper at {} (cargo build -p dib-helper)",
            helper_bin().display()
        ));
    }
    if !u.home.is_dir() {
        return Some(format!("the test user {} has no home directory", u.name));
    }
    None
}

fn main() {
    if let Ok(case) = std::env::var(PROBE_ENV) {
        std::process::exit(probe_main(&case));
    }
    let tests = trials![
        refusals::bad_requests_are_refused_and_the_helper_keeps_serving,
        socket::the_socket_appears_only_when_it_accepts,
        socket::a_peer_outside_the_allowed_groups_is_refused,
        socket::start_helper_runs_as_root_only_a_binary_only_root_can_change,
        mounts::mounts_are_idmapped_with_nodev_and_nosuid_locked,
        backends::both_backends_build_the_same_image,
        killed_builds::killed_builds_leave_no_loop_device_or_mount,
        backends::xfs_is_built_through_the_helper,
        hostile::an_overlay_over_a_stalled_fuse_holds_nothing_but_its_own_connection,
        hostile::refused_peers_cannot_starve_allowed_ones,
        hostile::a_read_only_attachment_mounts_read_only,
    ];
    let in_ci = std::env::var("CI").as_deref() == Ok("true")
        && std::env::var("DIB_TIER3").as_deref() == Ok("1");
    run_trials("tier 3", tests, skip_reason(), in_ci, Vec::new())
}
