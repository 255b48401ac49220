# Sourced by the benchmark scripts that time a tool a user would pick
# instead beside dib, so that both sides get the same packages, release and
# sources. The caller sets $elements (dib's shipped elements directory).

# debian_minimal_env ARCH NAME: the value of NAME (DIB_DEBOOTSTRAP_INCLUDE,
# DIB_RELEASE, ...) once debian-minimal's environment.d has run for ARCH.
debian_minimal_env() {
    ARCH=$1 bash -c '. "$1"; printf "%s\n" "${!2}"' - \
        "$elements/debian-minimal/environment.d/10-debian-minimal.bash" "$2"
}

# dib_sources CACHE: the apt sources dib bootstrapped from, as written into
# the debian-minimal base it cached in the image cache CACHE.
dib_sources() {
    tar -xOf "$1"/debian-minimal/*.tar ./etc/apt/sources.list
}
