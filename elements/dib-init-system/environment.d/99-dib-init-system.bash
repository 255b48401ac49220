# DIB_INIT_SYSTEM from the image: in chroot phases the image is /, outside
# them it is TMP_MOUNT_PATH.
if [ -z "${DIB_INIT_SYSTEM:-}" ]; then
    __dib_root=/
    if [ ! -d /tmp/in_target.d ]; then
        __dib_root=${TMP_MOUNT_PATH:-/nonexistent}
    fi
    if [ -e "$__dib_root/lib/systemd/systemd" ] || [ -e "$__dib_root/usr/lib/systemd/systemd" ]; then
        DIB_INIT_SYSTEM=systemd
    elif [ -e "$__dib_root/sbin/openrc" ] || [ -e "$__dib_root/usr/sbin/openrc" ]; then
        DIB_INIT_SYSTEM=openrc
    elif [ -e "$__dib_root/sbin/initctl" ]; then
        DIB_INIT_SYSTEM=upstart
    elif [ -e "$__dib_root/sbin/init" ] || [ -e "$__dib_root/usr/sbin/init" ]; then
        DIB_INIT_SYSTEM=sysv
    else
        DIB_INIT_SYSTEM=
    fi
    unset __dib_root
fi
export DIB_INIT_SYSTEM
