#!/bin/bash
# Make each SSH host key this machine lacks; never replace one it has.
set -eu
set -o pipefail

for kind in rsa ecdsa ed25519; do
    key=/etc/ssh/ssh_host_${kind}_key
    if [ ! -f "$key" ]; then
        echo "runtime-ssh-host-keys: making $key"
        rm -f "$key.pub"
        ssh-keygen -q -t "$kind" -N '' -f "$key" < /dev/null
    fi
done
