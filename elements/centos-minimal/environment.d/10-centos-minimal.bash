# Distribution defaults; overridable with the DIB_ variables.
export DISTRO_NAME=centos
export DIB_RELEASE=${DIB_RELEASE:-9-stream}
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/centos
# CentOS Stream's mirror layout under DIB_DISTRIBUTION_MIRROR ("ID PATH KEY"
# lines); Stream 10 signs with the SHA-256 key.
__dib_centos_key=RPM-GPG-KEY-centosofficial
case "$DIB_RELEASE" in 9*) ;; *) __dib_centos_key=RPM-GPG-KEY-centosofficial-SHA256 ;; esac
export DIB_YUM_MINIMAL_MIRROR_REPOS=${DIB_YUM_MINIMAL_MIRROR_REPOS:-"baseos \$releasever-stream/BaseOS/\$basearch/os/ $__dib_centos_key
appstream \$releasever-stream/AppStream/\$basearch/os/ $__dib_centos_key"}
unset __dib_centos_key
export DIB_YUM_MINIMAL_RELEASE_PACKAGES=${DIB_YUM_MINIMAL_RELEASE_PACKAGES-centos-gpg-keys centos-stream-release centos-stream-repos}
export DIB_YUM_MINIMAL_BASE_PACKAGES=${DIB_YUM_MINIMAL_BASE_PACKAGES-dnf-plugins-core curl libcurl systemd-udev glibc-minimal-langpack glibc-langpack-en coreutils}
