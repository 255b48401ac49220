# Distribution defaults; overridable with the DIB_ variables.
export DISTRO_NAME=fedora
export DIB_RELEASE=${DIB_RELEASE:-42}
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/fedora
