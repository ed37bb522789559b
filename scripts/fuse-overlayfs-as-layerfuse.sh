#!/usr/bin/env bash
# A stand-in for layerfuse with layerfuse's command line, running fuse-overlayfs (Debian's
# package). For the conformance harness only: LAYERFUSE_FUZZ_BIN=$PWD/scripts/fuse-overlayfs-as-layerfuse.sh
# checks the harness's FUSE path (mount detection, teardown, concurrency) and measures a peer.
#   layerfuse mount --lower A:B --upper U --work W [--redirect-dir on|off] [--metacopy on|off] -f MNT
set -euo pipefail
[ "${1:-}" = mount ] || { echo "usage: $0 mount --lower L --upper U --work W [-f] MNT" >&2; exit 2; }
shift
lower= upper= work= mnt=
while [ $# -gt 0 ]; do
  case "$1" in
    --lower) lower=$2; shift 2 ;;
    --upper) upper=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --redirect-dir|--metacopy) shift 2 ;;
    -f) shift ;;
    *) mnt=$1; shift ;;
  esac
done
opts="lowerdir=$lower"
[ -n "$upper" ] && opts="$opts,upperdir=$upper,workdir=$work"
exec fuse-overlayfs -f -o "$opts" "$mnt"
