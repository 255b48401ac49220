# Distribution defaults; overridable with the DIB_ variables.
export DISTRO_NAME=ubuntu
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/ubuntu
export DIB_RELEASE=${DIB_RELEASE:-noble}
export DIB_UBUNTU_COMPONENTS=${DIB_UBUNTU_COMPONENTS:-main universe}
export DIB_DEBOOTSTRAP_COMPONENTS=$DIB_UBUNTU_COMPONENTS
export DIB_DEBOOTSTRAP_KEYRING=${DIB_DEBOOTSTRAP_KEYRING:-/usr/share/keyrings/ubuntu-archive-keyring.gpg}
export DIB_DEBOOTSTRAP_KEYRING_PACKAGE=ubuntu-keyring
# Bootstrapped with the base tree: an init system and the kernel.
export DIB_DEBOOTSTRAP_INCLUDE=${DIB_DEBOOTSTRAP_INCLUDE-systemd-sysv,busybox,sudo,gnupg,python3,adduser,ca-certificates,locales,lsb-release,linux-image-virtual}
