#!/usr/bin/env bash
# The kernel's own count and timing of each FUSE request for the metadata rows of issue 16,
# on each transport: 10,000 creates and deletes (fsops), an untar of /usr/share/doc and a
# `find -delete` of 1,000 lower files, each under scripts/fuse-profile.sh.
#
#   sudo scripts/fuse-profile-meta.sh [OUTDIR]     (default /var/tmp/lfb-runs/metaprof)
#
# A small union on a fresh ext4 image (with its journal, as scripts/bench.sh makes its own) that
# is loop-mounted on /var/tmp/metaprof-fx for the run: an ext4 without a journal (some VMs' root
# filesystem) makes every inode allocation within minutes of a mass delete scan the inode table
# for recently deleted inodes, which made a create or a whiteout cost 3-5x more. Writes
# TRANSPORT-OPERATION.txt (one table each) and TRANSPORT-times.txt (fsops' seconds) to OUTDIR.
# The io_uring half needs /sys/module/fuse/parameters/enable_uring=Y, which this never changes.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LF=${LAYERFUSE:-$TARGET/release/layerfuse}
FSOPS=$TARGET/bench-tools/fsops
P=$ROOT/scripts/fuse-profile.sh
OUT=${1:-/var/tmp/lfb-runs/metaprof}
B=/var/tmp/metaprof-fx
[[ $(id -u) == 0 ]] || { echo "fuse-profile-meta: needs root" >&2; exit 1; }
[[ -x $LF ]] || { echo "fuse-profile-meta: no layerfuse at $LF (cargo build --release, or LAYERFUSE=PATH)" >&2; exit 1; }
if [[ ! -x $FSOPS || $ROOT/benches/fsops.rs -nt $FSOPS ]]; then
  mkdir -p "$TARGET/bench-tools"
  rustc --edition 2024 -O "$ROOT/benches/fsops.rs" -o "$FSOPS"
fi
IMG=/var/tmp/metaprof.img
cleanup() {
  if mountpoint -q "$B/m"; then "$LF" umount "$B/m" || umount -l "$B/m"; fi
  if mountpoint -q "$B"; then umount "$B"; fi
  rm -f "$IMG"
}
trap cleanup EXIT
mkdir -p "$OUT" "$B"
rm -f "$IMG"
truncate -s 4G "$IMG"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
mount -o loop "$IMG" "$B"
if [[ ! -f $B/src.tar ]]; then
  mkdir -p "$B/l/low"
  for i in $(seq 1 1000); do echo "$i" >"$B/l/low/f$i"; done
  tar -cf "$B/src.tar.tmp" -C /usr/share doc
  mv "$B/src.tar.tmp" "$B/src.tar"
fi
echo "untar source: $(tar -tf "$B/src.tar" | wc -l) entries; layerfuse: $LF" >"$OUT/README"
for t in dev uring; do
  rm -rf "$B/u" "$B/w" "$B/m"
  mkdir -p "$B/u" "$B/w" "$B/m"
  "$LF" mount --lower "$B/l" --upper "$B/u" --work "$B/w" --transport "$t" "$B/m"
  conn=$(mountpoint -d "$B/m" | cut -d: -f2)
  mkdir "$B/m/cr" "$B/m/untar"
  sync
  echo 3 >/proc/sys/vm/drop_caches
  "$P" --conn "$conn" --out "$OUT/$t-create.txt" -- "$FSOPS" create "$B/m/cr" 10000 1024 >>"$OUT/$t-times.txt"
  "$P" --conn "$conn" --out "$OUT/$t-delete.txt" -- "$FSOPS" unlink "$B/m/cr" 10000 >>"$OUT/$t-times.txt"
  "$P" --conn "$conn" --out "$OUT/$t-untar.txt" -- tar -xf "$B/src.tar" -C "$B/m/untar"
  ls "$B/m/low" >/dev/null
  "$P" --conn "$conn" --out "$OUT/$t-unlink-lower.txt" -- find "$B/m/low" -type f -delete
  "$LF" umount "$B/m"
done
echo "tables in $OUT"
