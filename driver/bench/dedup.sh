#!/usr/bin/env bash
# Deduplication and import speed of the layer store, side by side with dockerd on kernel
# overlay2 (docs/benchmarks.md, section "Layer store"). As root:
#   driver/bench/dedup.sh [SHARED_MIB] [IMPORT_MIB]     (defaults 100 and 500)
# 1. Two images (one layer each) that share SHARED_MIB of identical files, loaded into a
#    dockerd on the layerfuse plugin and one on overlay2; a container of each reads every
#    shared file; then: disk bytes of each store (du, hard links once), page cache of the
#    backing files (fincore) and of the files seen through the containers' roots.
# 2. Import of one IMPORT_MIB layer tar: `layerfuse-driver layer import` (which syncs before
#    the layer is visible) against `tar -x` and `tar -x; sync` on the same disk.
set -uo pipefail
cd "$(dirname "$0")/../.."
SHARED_MIB=${1:-100}
IMPORT_MIB=${2:-500}
DRV=${LAYERFUSE_DRIVER_BIN:-target/release/layerfuse-driver}
[ -x "$DRV" ] || cargo build -q --release -p layerfuse-driver
D=$(mktemp -d /tmp/lft/bench-dedup.XXXXXX)
NAME=lfbench$$
SOCK=/run/docker/plugins/$NAME.sock
PIDS=()
cleanup() {
  for c in $(/usr/bin/docker -H unix://$D/lf/docker.sock ps -aq 2>/dev/null); do /usr/bin/docker -H unix://$D/lf/docker.sock rm -f "$c" >/dev/null 2>&1; done
  for c in $(/usr/bin/docker -H unix://$D/k/docker.sock ps -aq 2>/dev/null); do /usr/bin/docker -H unix://$D/k/docker.sock rm -f "$c" >/dev/null 2>&1; done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null
    for _ in $(seq 200); do kill -0 "${PIDS[$i]}" 2>/dev/null || break; sleep 0.1; done
  done
  awk -v p="$D" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -f "$SOCK"
  rm -rf "$D"
}
trap cleanup EXIT
wait_for() { for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

echo "# $(date -u +%F\ %T) $(uname -r), load: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
# Images: a busybox root, SHARED_MIB in 1 MiB files of random bytes, one file of their own.
mkdir -p "$D/rootfs"/{bin,etc,tmp,shared} && cp /bin/busybox "$D/rootfs/bin/" &&
  for a in sh cat sleep echo; do ln -s busybox "$D/rootfs/bin/$a"; done
for i in $(seq "$SHARED_MIB"); do head -c 1M /dev/urandom >"$D/rootfs/shared/f$i"; done
echo a >"$D/rootfs/etc/which" && tar -C "$D/rootfs" -cf "$D/a.tar" .
echo b >"$D/rootfs/etc/which" && tar -C "$D/rootfs" -cf "$D/b.tar" .

"$DRV" docker --root "$D/store" --socket "$SOCK" --log warn 2>"$D/plugin.log" &
PIDS+=($!)
wait_for test -S "$SOCK" || { echo "plugin did not start"; exit 1; }
start_dockerd() { # DIR DRIVER
  mkdir -p "$1"
  dockerd --experimental --data-root "$1/root" --exec-root "$1/exec" -H "unix://$1/docker.sock" \
    --pidfile "$1/pid" --iptables=false --ip6tables=false --bridge=none --storage-driver "$2" \
    >"$1/log" 2>&1 &
  PIDS+=($!)
  wait_for /usr/bin/docker -H "unix://$1/docker.sock" version || { echo "dockerd $2 did not start"; exit 1; }
}
start_dockerd "$D/lf" "$NAME"
start_dockerd "$D/k" overlay2
LF=(/usr/bin/docker -H "unix://$D/lf/docker.sock")
K=(/usr/bin/docker -H "unix://$D/k/docker.sock")

echo
echo "## Two images sharing $SHARED_MIB MiB of identical files (one layer each)"
echo
echo "| | layerfuse plugin | kernel overlay2 | ratio |"
echo "|---|---|---|---|"
for dk in LF K; do
  eval "cmd=(\"\${$dk[@]}\")"
  "${cmd[@]}" import "$D/a.tar" img:a >/dev/null && "${cmd[@]}" import "$D/b.tar" img:b >/dev/null
done
sync
lf_disk=$(du -sb "$D/store/store" | cut -f1)
k_disk=$(du -sb "$D/k/root/overlay2" | cut -f1)
echo "| disk bytes of the store (du -sb, hard links once) | $lf_disk | $k_disk | $(echo "scale=2; $lf_disk / $k_disk" | bc) |"

# Backing files of the shared content, per driver.
lf_backing() { find "$D/store/store/objects" -type f; }
k_backing() { find "$D/k/root/overlay2" -path '*/diff/shared/*' -type f; }
# Evict them (POSIX_FADV_DONTNEED through dd) so both start cold.
for f in $(lf_backing) $(k_backing); do dd if="$f" iflag=nocache count=0 status=none; done
cached_kib() { awk '/^Cached:/ {print $2}' /proc/meminfo; }
resident() { xargs -r fincore -b -n -o RES 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
for dk in LF K; do
  eval "cmd=(\"\${$dk[@]}\")"
  before=$(cached_kib)
  for img in a b; do
    "${cmd[@]}" run -d --network none --name "r$img" "img:$img" sh -c 'cat /shared/* > /dev/null; echo read; sleep 600' >/dev/null
  done
  for img in a b; do wait_for sh -c "${cmd[*]} logs r$img 2>&1 | grep -q read"; done
  after=$(cached_kib)
  if [ "$dk" = LF ]; then
    lf_res=$(lf_backing | resident)
    lf_union=0
    for img in a b; do
      mp=$("${cmd[@]}" inspect -f '{{.GraphDriver.Data.MergedDir}}' "r$img")
      n=$(find "$mp/shared" -type f | resident)
      lf_union=$((lf_union + n))
    done
    lf_delta=$(((after - before) * 1024))
  else
    k_res=$(k_backing | resident)
    k_delta=$(((after - before) * 1024))
  fi
  for img in a b; do "${cmd[@]}" rm -f "r$img" >/dev/null; done
done
echo "| page cache of the backing files after both containers read all (fincore) | $lf_res | $k_res | $(echo "scale=2; $lf_res / $k_res" | bc) |"
echo "| page cache of the files seen through the two containers' roots (fincore on the unions) | $lf_union | (the backing inodes) | |"
echo "| page cache in all | $((lf_res + lf_union)) | $k_res | $(echo "scale=2; ($lf_res + $lf_union) / $k_res" | bc) |"
echo "| /proc/meminfo Cached grew by (noisy: whole machine) | $lf_delta | $k_delta | |"
"${LF[@]}" info 2>/dev/null | grep -E 'Deduplicated Bytes|Object Bytes' | sed 's/^ */docker info: /'

echo
echo "## Import of one $IMPORT_MIB MiB layer (64 files of random bytes), same disk"
echo
mkdir -p "$D/big/data"
for i in $(seq 64); do head -c $((IMPORT_MIB * 1024 * 1024 / 64)) /dev/urandom >"$D/big/data/f$i"; done
tar -C "$D/big" -cf "$D/big.tar" data && rm -rf "$D/big"
echo "| | seconds (3 runs) |"
echo "|---|---|"
t() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "scale=2; ($(date +%s.%N) - $s) / 1" | bc; }
row() { echo "| $1 | $2 $3 $4 |"; }
imp=(); tx=(); txs=()
for r in 1 2 3; do
  sync
  imp+=("$(t "$DRV" layer import --root "$D/istore$r" big "$D/big.tar")")
  rm -rf "$D/istore$r"
  mkdir -p "$D/x$r"; sync
  tx+=("$(t tar -C "$D/x$r" -xf "$D/big.tar")")
  rm -rf "$D/x$r"; mkdir -p "$D/x$r"; sync
  txs+=("$(t sh -c "tar -C $D/x$r -xf $D/big.tar && sync")")
  rm -rf "$D/x$r"
done
row "layerfuse-driver layer import (hash, skeleton, objects, syncfs, rename)" "${imp[@]}"
row "tar -x" "${tx[@]}"
row "tar -x; sync" "${txs[@]}"
