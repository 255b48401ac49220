# Distribution defaults; overridable with the DIB_ variables.
export DISTRO_NAME=rocky
export DIB_RELEASE=${DIB_RELEASE:-9}
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/rocky
# Rocky Linux's mirror layout under DIB_DISTRIBUTION_MIRROR ("ID PATH KEY").
export DIB_YUM_MINIMAL_MIRROR_REPOS=${DIB_YUM_MINIMAL_MIRROR_REPOS:-'baseos $releasever/BaseOS/$basearch/os/ RPM-GPG-KEY-Rocky-$releasever
appstream $releasever/AppStream/$basearch/os/ RPM-GPG-KEY-Rocky-$releasever'}
export DIB_YUM_MINIMAL_RELEASE_PACKAGES=${DIB_YUM_MINIMAL_RELEASE_PACKAGES-rocky-gpg-keys rocky-release rocky-repos}
export DIB_YUM_MINIMAL_BASE_PACKAGES=${DIB_YUM_MINIMAL_BASE_PACKAGES-dnf-plugins-core curl libcurl systemd-udev glibc-minimal-langpack glibc-langpack-en coreutils}
