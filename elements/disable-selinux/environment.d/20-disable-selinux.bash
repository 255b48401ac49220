# selinux=0 on the kernel command line the bootloader element writes (after
# its default: this file sorts after bootloader's).
export DIB_BOOTLOADER_DEFAULT_CMDLINE="${DIB_BOOTLOADER_DEFAULT_CMDLINE:+$DIB_BOOTLOADER_DEFAULT_CMDLINE }selinux=0"
