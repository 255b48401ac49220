# Distribution defaults; overridable with the DIB_ variables.
export DISTRO_NAME=opensuse
export DIB_RELEASE=${DIB_RELEASE:-15.6}
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/opensuse
