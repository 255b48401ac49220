//! Tier 2: the rootless sandbox, driven through `dib create` as a plain user
//! with a subordinate id range (CI runs this as the `dibtest` user).
//!
//! Each build uses the `tiny-os` fixture (a busybox tree, no mirror needed)
//! and `no-final-image`; hooks write what they observe into `DIB_TEST_OUT`,
//! a host directory, from cleanup.d.
//!
//! When this tier cannot run here (root, or no subuid range), every trial is
//! reported as ignored with the reason; with CI=true it fails instead. One
//! trial is the other way round: dib run as root maps ids to themselves, and
//! that runs only as root (tier 1 in CI).
//!
//! The trials are in modules by subject; `support` holds the helpers several
//! of them share; a built image is inspected with `common::image`.

#[path = "../common/mod.rs"]
mod common;

mod break_shell;
mod cleanup;
mod containers;
mod disk_images;
mod elements;
mod failures;
mod get_kernel;
mod hooks;
mod hostile;
mod isolation;
mod oci_base;
mod oci_push;
mod outputs;
mod rebuilds;
mod runtime;
mod signals;
mod source_elements;
mod support;

use common::tier::{run_trials, skip_reason};
use libtest_mimic::Trial;

fn main() {
    let tests = trials![
        disk_images::offline_image_matches_its_configuration,
        disk_images::bad_block_device_input_fails_clearly_and_leaves_nothing,
        disk_images::a_symlink_bound_for_a_fat_filesystem_fails_the_build,
        get_kernel::get_kernel_reads_qcow2_and_gpt_images_without_privilege,
        signals::stopping_while_writing_outputs_leaves_no_file,
        isolation::chroot_phases_run_as_root_in_an_isolated_tree,
        failures::a_failing_script_fails_the_build_naming_it,
        cleanup::on_disk_builds_clean_up_chowned_files_and_log_to_a_file,
        failures::an_empty_root_is_a_failed_deploy,
        isolation::a_daemon_started_by_a_hook_dies_with_its_phase,
        signals::stop_signals_leave_no_process_or_mount,
        break_shell::after_error_opens_a_shell_then_fails,
        failures::ubuntu_without_a_mirror_or_keyring_fails_clearly,
        failures::foreign_architectures_fail_clearly_without_binfmt,
        outputs::tar_and_tgz_keep_owners_modes_and_xattrs,
        outputs::a_failed_build_leaves_no_output,
        rebuilds::a_rebuild_replays_what_did_not_change_and_runs_from_the_first_change,
        rebuilds::a_build_killed_while_keeping_a_layer_leaves_nothing_a_rebuild_uses,
        rebuilds::two_builds_at_once_share_the_cache,
        rebuilds::the_same_inputs_give_the_same_bytes_and_a_changed_one_does_not,
        containers::container_images_are_what_skopeo_umoci_and_podman_read,
        containers::the_same_tree_gives_the_same_image_digests,
        containers::a_container_disk_holds_the_qcow2_as_kubevirt_expects,
        containers::a_bad_image_configuration_fails_the_build_and_writes_nothing,
        oci_base::oci_base_unpacks_a_layout_into_the_tree,
        oci_base::bad_oci_bases_fail_clearly_and_leave_nothing,
        hooks::odd_output_and_large_hook_trees_are_fine,
        cleanup::cleanup_never_reaches_through_a_hooks_bind_mount,
        isolation::resolv_conf_follows_what_the_hooks_did,
        signals::early_stop_signals_never_let_a_build_succeed,
        isolation::symlinks_in_the_image_cannot_point_the_build_at_the_host,
        signals::kill_9_of_dib_takes_the_build_down,
        hooks::skipped_hooks_are_listed_with_x,
        break_shell::break_shell_answers_on_a_terminal,
        runtime::hooks_get_dibs_runtime,
        source_elements::source_repositories_fetch_override_refresh_and_work_offline,
        source_elements::bad_source_repository_entries_fail_naming_the_line,
        source_elements::pypi_and_pip_cache_configure_pip_for_the_build_only,
        elements::configuration_elements_write_their_files,
        elements::users_keys_proxies_and_cloud_init,
        elements::svc_map_merges_the_elements_maps,
        elements::impossible_builds_fail_at_once,
        elements::extract_image_unpacks_a_disk_images_root,
        hostile::hooks_cannot_write_the_home_caches_or_the_job,
        hostile::strict_box_hides_the_home_and_the_network,
        hostile::seccomp_refuses_what_no_build_needs,
        hostile::a_build_cannot_reach_another_build,
        hostile::hooks_write_beside_the_image_only_under_its_name,
        oci_push::a_registry_that_does_not_answer_stops_the_build_before_it_starts,
        oci_push::the_registry_fixture_serves_what_skopeo_pushed,
        oci_push::the_push_step_copies_a_layout_and_says_how_to_retry,
        oci_push::a_built_image_is_pushed_as_built,
    ];
    let in_ci = std::env::var("CI").as_deref() == Ok("true")
        && std::env::var("DIB_TIER2").as_deref() == Ok("1");
    // The identity mapping is dib's path as root: that trial runs only as root.
    let as_root = trials![isolation::as_root_ids_map_to_themselves]
        .into_iter()
        .map(|(name, f)| Trial::test(name, f).with_ignored_flag(!nix::unistd::geteuid().is_root()))
        .collect();
    run_trials(
        "tier 2 (user namespaces)",
        tests,
        skip_reason(),
        in_ci,
        as_root,
    );
}
