# Distribution defaults; overridable with the DIB_ variables.
export DISTRO_NAME=debian
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/debian
if [ -z "${DIB_RELEASE:-}" ]; then
    DIB_RELEASE=bookworm
    if [ -r /etc/os-release ] && grep -q '^ID=debian$' /etc/os-release; then
        DIB_RELEASE=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
        DIB_RELEASE=${DIB_RELEASE:-bookworm}
    fi
fi
export DIB_RELEASE
export DIB_DEBIAN_COMPONENTS=${DIB_DEBIAN_COMPONENTS:-main}
export DIB_DEBOOTSTRAP_COMPONENTS=$DIB_DEBIAN_COMPONENTS
# Bootstrapped with the base tree (and cached with it): an init system and
# the kernel, as DIB's debian-minimal installs them.
case "${ARCH:-amd64}" in
    amd64) __dib_kernel=linux-image-amd64 ;;
    arm64) __dib_kernel=linux-image-arm64 ;;
    i386) __dib_kernel=linux-image-686 ;;
    armhf) __dib_kernel=linux-image-armmp ;;
    *) __dib_kernel= ;;
esac
# What DIB's debian-minimal base has besides: busybox, sudo, gnupg, python3.
export DIB_DEBOOTSTRAP_INCLUDE=${DIB_DEBOOTSTRAP_INCLUDE-systemd-sysv,busybox,sudo,gnupg,python3,adduser,ca-certificates,locales,lsb-release${__dib_kernel:+,$__dib_kernel}}
unset __dib_kernel
