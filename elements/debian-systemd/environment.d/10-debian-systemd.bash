# The init package of the image (DIB's variable; systemd is the default).
export DIB_DEBIAN_ALT_INIT_PACKAGE=systemd-sysv
