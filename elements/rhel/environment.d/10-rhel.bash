# Distribution defaults; overridable with the DIB_ variables. RHEL's KVM
# guest image comes with a subscription: give it as DIB_LOCAL_IMAGE.
export DISTRO_NAME=rhel
export DIB_RELEASE=${DIB_RELEASE:-9}
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/redhat
