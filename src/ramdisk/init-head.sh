#!/bin/sh
# /init of a dib ramdisk: this head, then every element's init.d fragment
# (in run-parts order), then the tail. POSIX sh, run by busybox.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
# The directories the copied libraries are in (there is no ld.so.cache).
LD_LIBRARY_PATH=$(/bin/busybox cat /etc/dib-ld-library-path 2> /dev/null || true)
export LD_LIBRARY_PATH
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts

# Kernel arguments: each KEY=VALUE as $KEY (names made shell-safe; names
# /init itself uses are left alone), and `troubleshoot` as a flag. No
# globbing of the command line; the value is assigned, never evaluated.
TROUBLESHOOT=
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        troubleshoot) TROUBLESHOOT=1 ;;
        *=*)
            key=$(echo "${arg%%=*}" | tr -c 'A-Za-z0-9_\n' '_')
            case "$key" in
                '' | PATH | IFS | HOME | PS1 | PS2 | PS4 | LD_* | TROUBLESHOOT | DIB_* | BOOT_* | TARGET_* | arg | key | [0-9]*) ;;
                *) eval "$key=\${arg#*=}" ;;
            esac
            ;;
    esac
done
set +f

dib_step() {
    DIB_STEP=$1
}

# A shell on the console: job control through cttyhack.
dib_shell() {
    echo "dib ramdisk: troubleshooting shell (exit to go on)"
    setsid cttyhack sh || sh
}

# On an error: say what failed, offer a shell (press t), else power off.
dib_fail() {
    echo "dib ramdisk: ERROR in ${DIB_STEP:-init}: $*"
    echo "dib ramdisk: press t within 30 seconds for a troubleshooting shell"
    key=
    read -t 30 -n 1 key || true
    if [ "$key" = t ]; then
        dib_shell
    fi
    poweroff -f
}

# Devices and their modules: udev when the ramdisk has it, else mdev.
if [ -x /lib/systemd/systemd-udevd ]; then
    /lib/systemd/systemd-udevd --daemon --resolve-names=never
    udevadm trigger --action=add --type=subsystems
    udevadm trigger --action=add --type=devices
    udevadm settle --timeout=30 || true
else
    echo /sbin/mdev > /proc/sys/kernel/hotplug
    mdev -s
fi
echo "dib ramdisk: kernel $(uname -r), started"
if [ -n "$TROUBLESHOOT" ]; then
    dib_shell
fi
set -e
# A fragment that fails (set -e) or exits lands here: /init must not end.
dib_exit() {
    status=$?
    trap - EXIT
    set +e
    if [ "$status" = 0 ]; then
        echo "dib ramdisk: ${DIB_STEP:-init} ended the ramdisk"
        poweroff -f
    fi
    dib_fail "a command failed (status $status)"
}
trap dib_exit EXIT
