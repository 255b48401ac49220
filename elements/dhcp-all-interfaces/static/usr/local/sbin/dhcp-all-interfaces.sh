#!/bin/bash
# dhcp-all-interfaces.sh [INTERFACE]: configure the interface (every one
# but lo without an argument) for DHCP in /etc/network/interfaces when it
# has no configuration, a MAC of its own (or is a VLAN on such a NIC) and a
# link.
if [ "${DIB_DEBUG_TRACE:-0}" -gt 0 ]; then
    set -x
fi
set -eu
set -o pipefail

# Seconds to wait for a link and for router advertisements (set by the
# dhcp-all-interfaces element when the image is built).
timeout=30

PATH=/usr/local/sbin:/usr/sbin:/sbin:$PATH
eni=/etc/network/interfaces
if [ ! -d /etc/network ]; then
    echo "dhcp-all-interfaces: no /etc/network: only ifupdown's interfaces file is supported" >&2
    exit 1
fi
touch "$eni"
# One run at a time: interfaces appear together at boot.
if [ -z "${DHCP_ALL_INTERFACES_LOCKED:-}" ]; then
    DHCP_ALL_INTERFACES_LOCKED=1 exec flock -x "$eni" "$0" "$@"
fi

has_config() {
    local out
    out=$(ifquery "$1" 2> /dev/null) || return 1
    [ -n "$out" ]
}

# A VLAN NIC.ID whose MAC is copied from a NIC with a MAC of its own.
is_vlan() {
    local iface=$1 lower
    [ "$(cat "/sys/class/net/$iface/addr_assign_type")" = 2 ] || return 1
    lower=${iface%%.*}
    [ "$lower" != "$iface" ] && [ -e "/sys/class/net/$lower" ] || return 1
    [ "$(cat "/sys/class/net/$lower/addr_assign_type")" = 0 ]
}

has_link() {
    [ "$(cat "/sys/class/net/$1/carrier" 2> /dev/null || echo 0)" = 1 ]
}

configure() {
    local iface=$1 v6=$2
    {
        printf 'auto %s\niface %s inet dhcp\n' "$iface" "$iface"
        case "$v6" in
            managed) printf 'iface %s inet6 dhcp\n' "$iface" ;;
            other) printf 'iface %s inet6 auto\n    dhcp 1\n' "$iface" ;;
            slaac) printf 'iface %s inet6 auto\n    dhcp 0\n' "$iface" ;;
        esac
        printf '\n'
    } >> "$eni"
    if [ "$v6" != none ] && [ -s /etc/machine-id ]; then
        # DUID-UUID (type 4) from the machine id.
        mkdir -p /var/lib/dhcp
        echo "default-duid \"\\x00\\x04$(sed 's/../\\x&/g' < /etc/machine-id)\";" \
            > "/var/lib/dhcp/dhclient6--$iface.lease"
    fi
    echo "dhcp-all-interfaces: $iface configured for DHCP (IPv6: $v6)"
}

# What the routers advertise: managed, other, slaac, or none.
ipv6_mode() {
    local iface=$1 ra rc tries
    if ! command -v rdisc6 > /dev/null; then
        echo none
        return
    fi
    for ((tries = timeout; tries > 0; tries--)); do
        rc=0
        ra=$(rdisc6 --retry 3 --single "$iface" 2> /dev/null) || rc=$?
        case $rc in
            0)
                if echo "$ra" | grep -q 'Stateful address conf.*: *Yes'; then
                    echo managed
                elif echo "$ra" | grep -q 'Stateful other conf.*: *Yes'; then
                    echo other
                else
                    echo slaac
                fi
                return
                ;;
            2) break ;;
            *) sleep 1 ;;
        esac
    done
    echo none
}

inspect() {
    local iface=$1 tries
    if has_config "$iface"; then
        echo "dhcp-all-interfaces: $iface has a configuration: skipped"
        return
    fi
    if [ "$(cat "/sys/class/net/$iface/addr_assign_type")" != 0 ] && ! is_vlan "$iface"; then
        echo "dhcp-all-interfaces: $iface has a generated MAC: skipped"
        return
    fi
    for ((tries = timeout; tries > 0; tries--)); do
        ip link set dev "$iface" up > /dev/null 2>&1 || true
        has_link "$iface" && break
        sleep 1
    done
    if ! has_link "$iface"; then
        echo "dhcp-all-interfaces: no link on $iface: skipped"
        return
    fi
    configure "$iface" "$(ipv6_mode "$iface")"
}

if [ -n "${1:-}" ]; then
    inspect "$1"
else
    for dev in /sys/class/net/*; do
        iface=${dev##*/}
        [ "$iface" = lo ] || inspect "$iface"
    done
fi
