# Only the on-disk source (see the README).
export DIB_CLOUD_INIT_DATASOURCES=NoCloud
