#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine, run as root.
# Installs Debian's bcc and kernel headers, links the headers for the
# running kernel when it has none, mounts tracefs, and builds .venv with
# Debian's bcc importable (only bcc, not the rest of dist-packages).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: must run as root (it installs packages and mounts tracefs)" >&2
    exit 1
fi

apt_packages=(python3-bpfcc bpftool linux-headers-amd64 python3-venv python3-dev
              build-essential chromium)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# bcc compiles against /lib/modules/$(uname -r)/build. This kernel ships no
# headers, so point build/source at Debian's newest installed headers; the
# BPF code never relies on their struct layouts (offsets come from BTF).
kmod="/lib/modules/$(uname -r)"
if [ ! -e "$kmod/build/include" ]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
    [ -n "$hdr" ] || { echo "setup.sh: no linux-headers-*-amd64 under /usr/src" >&2; exit 1; }
    mkdir -p "$kmod"
    ln -sfn "$hdr" "$kmod/build"
    ln -sfn "${common:-$hdr}" "$kmod/source"
fi

if [ ! -e /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing
fi

if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# Expose Debian's bcc, and nothing else from dist-packages, to the venv.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
.venv/bin/python -c 'import bcc, duckdb, pyarrow' >/dev/null
echo "setup.sh: ready (.venv, bcc $(.venv/bin/python -c 'import bcc; print(getattr(bcc, "__version__", "?"))'))"
