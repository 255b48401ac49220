//! Tier 4: end to end against the real Debian mirror (the host's apt
//! sources, or DIB_DISTRIBUTION_MIRROR), as a plain user with a subuid range.
//!
//! The trials share one image cache (`DIB_E2E_CACHE`, default
//! `~/.cache/dib-e2e`), so the base tree is bootstrapped once per machine and
//! unpacked from the cache after that; concurrent trials meet at the cache
//! lock. Where this tier cannot run, its trials are ignored with the reason
//! (with CI=true they fail instead).

#[path = "../common/mod.rs"]
mod common;

mod cloud;
mod config_elements;
mod containers;
mod dib_elements;
mod foreign;
mod framework_elements;
mod helper_backend;
mod image_cache;
mod packages;
mod python_and_boot_elements;
mod ramdisks;
mod rebuilds;
mod rpm_family;
mod runtime;
mod support;
mod vm_images;

use common::tier::{run_trials, skip_reason};

/// Why tier 4 cannot run here, beyond tier 2's reasons.
fn e2e_skip_reason() -> Option<String> {
    if let Some(r) = skip_reason() {
        return Some(r);
    }
    let tools = [
        "qemu-system-x86_64",
        "sfdisk",
        "mcopy",
        "mkfs.fat",
        "mmdebstrap",
        "/usr/lib/*/qemu/block-iscsi.so",
        "/usr/share/ovmf/OVMF.fd",
        "qemu-system-aarch64",
        "qemu-system-i386",
        "dnf",
        "zypper",
        "rpmbuild",
        "createrepo_c",
        "/usr/share/AAVMF/AAVMF_CODE.fd",
    ];
    if let Some(tool) = dib_sandbox::host_tools::missing(tools).first() {
        return Some(format!(
            "{tool} is not installed (scripts/prepare-host installs it)"
        ));
    }
    None
}

fn main() {
    // The foreign-architecture trials first: their emulated builds take
    // longest, and the others fill the other thread meanwhile.
    let tests = trials![
        foreign::arm64_vm_boots_under_aavmf_and_its_ramdisk_runs_init_d,
        foreign::armhf_tree_and_filesystem_are_arm,
        rpm_family::fedora_minimal_boots_and_the_fedora_cloud_image_builds_on_it,
        rpm_family::opensuse_minimal_boots,
        rebuilds::a_changed_post_install_script_rebuilds_from_the_cache_and_boots_with_it,
        rebuilds::the_same_inputs_give_byte_identical_images_and_ramdisks,
        rpm_family::rpm_bootstraps_fail_clearly,
        rpm_family::fedora_ramdisk_runs_init_d,
        packages::debian_minimal_tar_is_a_sound_debian_tree,
        image_cache::a_warm_build_unpacks_the_cached_base,
        framework_elements::framework_elements_do_their_job,
        python_and_boot_elements::python_and_boot_elements_do_their_job,
        packages::apt_sources_replaces_the_images_sources,
        packages::the_debian_element_is_cloud_ready,
        config_elements::config_elements_in_a_debian_image,
        config_elements::hardware_ramdisk_reports_and_burns_in,
        runtime::debian_hooks_get_dibs_runtime_and_the_hosts_cas,
        image_cache::concurrent_cold_builds_share_one_bootstrap,
        image_cache::offline_builds_use_only_the_cache,
        vm_images::mbr_vm_image_boots_and_matches_its_plan,
        containers::a_debian_image_goes_through_a_registry_and_boots_as_a_vm,
        vm_images::gpt_bios_image_boots,
        ramdisks::debian_ramdisk_boots_runs_init_d_and_troubleshoots,
        ramdisks::deploy_ironic_ramdisk_reports_and_exports_its_disk,
        ramdisks::deploy_kexec_ramdisk_kexecs_into_the_fetched_kernel,
        vm_images::debian_vm_boots_with_ssh,
        vm_images::efi_image_boots_under_ovmf_and_matches_its_plan,
        cloud::debian_vm_is_cloud_ready_over_ssh,
    ];
    let skip = if std::env::var("DIB_SKIP_TIER4").as_deref() == Ok("1") {
        Some("scripts/test runs this tier on its own, after tier 2".to_string())
    } else {
        e2e_skip_reason()
    };
    let in_ci = std::env::var("CI").as_deref() == Ok("true")
        && std::env::var("DIB_TIER4").as_deref() == Ok("1");
    // The helper backend's boots need a dib-helper serving the test user.
    let helper_skip = skip.clone().or_else(|| {
        helper_backend::helper_socket().is_none().then(|| {
            "no dib-helper for the test user (DIB_TEST_HELPER_SOCKET; scripts/test starts one \
             as root)"
                .to_string()
        })
    });
    if let (Some(r), None) = (&helper_skip, &skip) {
        eprintln!("tier 4's helper trials skipped: {r}");
    }
    let helper = trials![
        helper_backend::helper_gpt_bios_image_boots,
        helper_backend::helper_efi_image_boots_under_ovmf,
        helper_backend::helper_xfs_root_boots,
        rpm_family::fedora_cloud_image_with_an_xfs_root_through_the_helper,
        foreign::i386_vm_built_by_the_helper_boots_by_bios,
    ];
    let mut extra = common::tier::trials(helper, &helper_skip, in_ci);
    // DIB's own elements: its released package, downloaded with pip.
    let dib_skip = skip.clone().or_else(dib_elements::skip_reason);
    if let (Some(r), None) = (&dib_skip, &skip) {
        eprintln!("tier 4's DIB element trials skipped: {r}");
    }
    let dib = trials![
        dib_elements::dib_elements_shape_a_debian_tree,
        dib_elements::dib_elements_boot_in_a_vm,
    ];
    extra.extend(common::tier::trials(dib, &dib_skip, in_ci));
    run_trials("tier 4 (end to end)", tests, skip, in_ci, extra);
}
