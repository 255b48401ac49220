# Distribution defaults; overridable with the DIB_ variables.
export DISTRO_NAME=opensuse
export DIB_RELEASE=${DIB_RELEASE:-15.6}
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/opensuse
# openSUSE's mirror layout under DIB_DISTRIBUTION_MIRROR ("ID PATH" lines):
# Leap's release and update repositories, or Tumbleweed's one.
if [ "$DIB_RELEASE" = tumbleweed ]; then
    __dib_layout='oss tumbleweed/repo/oss/'
else
    __dib_layout='oss distribution/leap/$releasever/repo/oss/
update update/leap/$releasever/oss/'
fi
export DIB_ZYPPER_MINIMAL_MIRROR_REPOS=${DIB_ZYPPER_MINIMAL_MIRROR_REPOS:-$__dib_layout}
unset __dib_layout
# ZYPPER_REPOS ("NAME=>URI" words) from the mirror, unless given.
if [ -z "${ZYPPER_REPOS:-}" ] && [ -n "${DIB_DISTRIBUTION_MIRROR:-}" ]; then
    while read -r __dib_id __dib_path; do
        [ -n "$__dib_id" ] || continue
        ZYPPER_REPOS="${ZYPPER_REPOS:+$ZYPPER_REPOS }$__dib_id=>${DIB_DISTRIBUTION_MIRROR%/}/${__dib_path//\$releasever/$DIB_RELEASE}"
    done <<< "$DIB_ZYPPER_MINIMAL_MIRROR_REPOS"
    unset __dib_id __dib_path
fi
export ZYPPER_REPOS
export DIB_OPENSUSE_PATTERNS=${DIB_OPENSUSE_PATTERNS:-}
export DIB_ZYPPER_MINIMAL_BASE_PACKAGES=${DIB_ZYPPER_MINIMAL_BASE_PACKAGES-openSUSE-release systemd-sysvinit udev shadow coreutils}
