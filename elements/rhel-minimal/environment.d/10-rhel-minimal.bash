# Distribution defaults; overridable with the DIB_ variables. RHEL's content
# needs a subscription: the bootstrap takes its repositories from
# DIB_YUM_MINIMAL_BOOTSTRAP_REPOS (.repo files with the entitlement's
# certificates), or DIB_DISTRIBUTION_MIRROR with DIB_YUM_MINIMAL_MIRROR_REPOS
# for a mirror of one's own.
export DISTRO_NAME=rhel
export DIB_RELEASE=${DIB_RELEASE:-9}
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/redhat
export DIB_YUM_MINIMAL_RELEASE_PACKAGES=${DIB_YUM_MINIMAL_RELEASE_PACKAGES-redhat-release}
export DIB_YUM_MINIMAL_BASE_PACKAGES=${DIB_YUM_MINIMAL_BASE_PACKAGES-dnf-plugins-core curl libcurl systemd-udev glibc-minimal-langpack glibc-langpack-en coreutils}
