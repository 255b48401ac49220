# Distribution defaults; overridable with the DIB_ variables.
export DISTRO_NAME=fedora
export DIB_RELEASE=${DIB_RELEASE:-42}
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/fedora
# Fedora's mirror layout under DIB_DISTRIBUTION_MIRROR ("ID PATH KEY" lines).
export DIB_YUM_MINIMAL_MIRROR_REPOS=${DIB_YUM_MINIMAL_MIRROR_REPOS:-'fedora releases/$releasever/Everything/$basearch/os/ RPM-GPG-KEY-fedora-$releasever-$basearch
updates updates/$releasever/Everything/$basearch/ RPM-GPG-KEY-fedora-$releasever-$basearch'}
export DIB_YUM_MINIMAL_RELEASE_PACKAGES=${DIB_YUM_MINIMAL_RELEASE_PACKAGES-fedora-release-common fedora-release-cloud fedora-repos fedora-gpg-keys}
# Beside dnf and the base system, as DIB's yum-minimal installs for Fedora.
export DIB_YUM_MINIMAL_BASE_PACKAGES=${DIB_YUM_MINIMAL_BASE_PACKAGES-dnf-plugins-core curl systemd-udev glibc-minimal-langpack glibc-langpack-en coreutils}
