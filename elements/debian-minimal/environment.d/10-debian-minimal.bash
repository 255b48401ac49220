# Distribution defaults; overridable with the DIB_ variables.
export DISTRO_NAME=debian
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
