#!/usr/bin/env bash
# Side-by-side benchmark: kernel overlayfs, fuse-overlayfs, unionfs-fuse and layerfuse over the
# same fixture (see shared/design/performance.md and docs/benchmarks.md).
#
#   sudo scripts/bench.sh [--reps N] [--quick] [--impls a,b] [--metrics a,b] [--layerfuse PATH]
#                         [--out DIR] [--workdir DIR] [--settle SECS] [--samples N]
#                         [--rebuild-fixture] [--no-build] [--metacopy] [--volatile]
#   sudo scripts/bench.sh --workload apt [--reps N] [--impls a,b] [--mirror URL] [--profile] [...]
#
# Needs root, /dev/fuse and the overlay module. Installs fio, fuse-overlayfs, unionfs-fuse, attr
# (and debootstrap for --workload apt) with apt-get if missing. Prints medians, min-max and the
# ratio to kernel overlayfs; writes results.csv, summary.csv and summary.md to the output directory.
# --metacopy mounts kernel overlayfs (metacopy=on) and layerfuse (--metacopy on) with metadata-only
# copy-up; --volatile mounts both without syncs (kernel volatile, layerfuse --volatile). Timing figures are informational: nothing here passes or fails on a threshold.
# More implementations for --impls: layerfuse-uring / layerfuse-dev / layerfuse-splice (layerfuse on one transport;
# plain `layerfuse` is --transport auto; uring needs /sys/module/fuse/parameters/enable_uring=Y,
# which this script never changes) and fuse-overlayfs2 (upstream 2.0: `cargo install
# fuse-overlayfs --root DIR`, then --fuse-overlayfs2 DIR/bin/fuse-overlayfs or $FUSE_OVERLAYFS2)
# and layerfuse-base (another layerfuse build, e.g. an older commit's, given by --layerfuse-base
# PATH, mounted with the options it has always had and its own default transport: a before/after
# comparison in one run).
# --profile (with --workload apt): each FUSE mount's apt-get runs under scripts/fuse-profile.sh,
# and OUT/profile-TAG.txt gets its per-request table (the tracing adds its own cost to the times).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Bump when the fixture layout changes: cached images are keyed by it.
FIXTURE_VERSION=2
ALL_IMPLS=kernel,fuse-overlayfs,unionfs-fuse,layerfuse
ALL_METRICS=statwalk,readdir,seqread,randread,seqwrite,copyup,meta,smallfiles,untar,renunlink,layers,rss,parallel

REPS=""
QUICK=0
IMPLS=$ALL_IMPLS
METRICS=$ALL_METRICS
WORK=/var/tmp/layerfuse-bench
OUT=""
SETTLE=""
SAMPLES=""
REBUILD=0
NO_BUILD=0
FO2_BIN=${FUSE_OVERLAYFS2:-/var/tmp/fo2/bin/fuse-overlayfs}
WORKLOAD=""
LF_BIN=${LAYERFUSE:-}
LF_BASE_BIN=${LAYERFUSE_BASE:-}
METACOPY=0
VOLATILE=0
PROFILE=0
CMDLINE="scripts/bench.sh $*"

usage() { sed -n '2,/^set -euo/{/^set -euo/d; s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --impls) IMPLS=$2; shift 2 ;;
    --metrics) METRICS=$2; shift 2 ;;
    --layerfuse) LF_BIN=$2; shift 2 ;;
    --fuse-overlayfs2) FO2_BIN=$2; shift 2 ;;
    --layerfuse-base) LF_BASE_BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --workdir) WORK=$2; shift 2 ;;
    --settle) SETTLE=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --rebuild-fixture) REBUILD=1; shift ;;
    --no-build) NO_BUILD=1; shift ;;
    --metacopy) METACOPY=1; shift ;;
    --volatile) VOLATILE=1; shift ;;
    --profile) PROFILE=1; shift ;;
    --workload) WORKLOAD=$2; shift 2 ;;
    --mirror) export BENCH_MIRROR=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# Scale. The full sizes are those of performance.md; --quick shrinks everything for a smoke test.
if [[ $QUICK == 1 ]]; then
  SCALE=quick
  NDIRS=100 BIGDIR=1000 BIG_MIB=64 MID_MIB=32 WRITE_MIB=64 NCREATE=1000 NTAR_DIRS=100
  M1_DIRS=100 M1_FILES=200 ML_DIRS=20 ML_FILES=10 RR_SECS=2 IMG_GIB=3 INODES=200000
  LAYERS="1 10 100 500"
  : "${REPS:=1}" "${SETTLE:=0.5}" "${SAMPLES:=1}"
else
  SCALE=full
  NDIRS=1000 BIGDIR=10000 BIG_MIB=1024 MID_MIB=256 WRITE_MIB=512 NCREATE=10000 NTAR_DIRS=1000
  M1_DIRS=1000 M1_FILES=1000 ML_DIRS=100 ML_FILES=20 RR_SECS=5 IMG_GIB=8 INODES=1600000
  LAYERS="1 10 100 500"
  : "${REPS:=3}" "${SETTLE:=2}" "${SAMPLES:=3}"
fi
NTAR=$((NTAR_DIRS * 20))
NRENAME=$((NDIRS / 2 * 2))
M1_ENTRIES=$((M1_DIRS * M1_FILES + M1_DIRS))

# ---------------------------------------------------------------------------------------------
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { echo "$EPOCHREALTIME"; }
# elapsed START END -> seconds with microseconds
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f\n", b - a }'; }
calc() { awk "BEGIN { printf \"%.6g\n\", $1 }"; }

[[ $(id -u) == 0 ]] || die "needs root (mounts, loop devices, drop_caches)"

need_pkgs=()
command -v fio >/dev/null || need_pkgs+=(fio)
command -v fuse-overlayfs >/dev/null || need_pkgs+=(fuse-overlayfs)
command -v unionfs >/dev/null || need_pkgs+=(unionfs-fuse)
command -v setfattr >/dev/null || need_pkgs+=(attr)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
if [[ $WORKLOAD == apt ]] && ! command -v debootstrap >/dev/null; then need_pkgs+=(debootstrap); fi
if [[ ${#need_pkgs[@]} -gt 0 ]]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
[[ -c /dev/fuse ]] || die "/dev/fuse missing"
modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || die "kernel overlay filesystem not available"

# ---------------------------------------------------------------------------------------------
# Tools: the fsops timing helper (std-only Rust, built with rustc) and the layerfuse binary.
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
FSOPS=$TARGET/bench-tools/fsops
if [[ ! -x $FSOPS || $ROOT/benches/fsops.rs -nt $FSOPS ]]; then
  log "building fsops helper"
  mkdir -p "$TARGET/bench-tools"
  rustc --edition 2024 -O "$ROOT/benches/fsops.rs" -o "$FSOPS"
fi
if [[ -z $LF_BIN ]]; then
  LF_BIN=$TARGET/release/layerfuse
  if [[ $NO_BUILD == 0 && ",$IMPLS," == *,layerfuse* ]]; then
    log "building layerfuse (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) || log "layerfuse build failed; it will be skipped"
  fi
fi

# ---------------------------------------------------------------------------------------------
# State and cleanup. Every mount and daemon the script makes is written to $STATE/mounts as
# "MOUNTPOINT PID" (PID 0 for kernel mounts) so the EXIT trap can undo it from any subshell.
mkdir -p "$WORK"
# One run at a time per work directory: they share the image, the loop device and the mount points.
exec 9>"$WORK/lock"
flock -n 9 || die "another bench.sh is running with --workdir $WORK"
STATE=$(mktemp -d "$WORK/state.XXXXXX")
: >"$STATE/mounts"
FX=$WORK/fx          # the fixture ext4 is mounted here
MNT=$WORK/mnt        # the union under test is mounted here
RUN_IMG=$WORK/run.img
LOOP=""
UNIONFS_META=.unionfs-fuse
CACHE_IMG=$WORK/cache/fixture-v$FIXTURE_VERSION-$SCALE.img

pid_alive() {
  local st
  st=$(awk '{ sub(/.*\) /, ""); print substr($0, 1, 1) }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# stop_daemon PID: after the unmount a FUSE daemon should exit by itself; give it 10 s.
stop_daemon() {
  local pid=$1 i
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  log "daemon $pid still running 10 s after unmount: SIGTERM"
  kill -TERM "$pid" 2>/dev/null || true
  sleep 1
  pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

unmount_all() { # newest first: mounts inside the union go before the union
  local mnt pid
  while read -r mnt pid; do
    [[ -n $mnt ]] || continue
    if grep -q " $mnt " /proc/mounts; then
      umount "$mnt" 2>/dev/null || { sleep 1; umount "$mnt" 2>/dev/null; } || umount -l "$mnt" || true
    fi
    if [[ $pid != 0 ]]; then stop_daemon "$pid"; fi
  done < <(tac "$STATE/mounts")
  : >"$STATE/mounts"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  unmount_all
  if grep -q " $FX " /proc/mounts; then umount "$FX" || umount -l "$FX"; fi
  [[ -n $LOOP ]] && losetup -d "$LOOP" 2>/dev/null
  rm -f "$RUN_IMG"
  rm -rf "$STATE"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# Memory freed by drop_caches goes back to the host within ~2 s and is slow to touch again:
# every measurement starts after the same pause.
settle() { sleep "$SETTLE"; }
cold() { drop_caches; settle; }

# ---------------------------------------------------------------------------------------------
# Fixture.
attach_image() {
  # Direct I/O on the backing file: no second copy of every block in the page cache.
  LOOP=$(losetup -f --show --direct-io=on "$1")
  mkdir -p "$FX"
  mount "$LOOP" "$FX"
}
detach_image() {
  umount "$FX"
  losetup -d "$LOOP"
  LOOP=""
}

whiteout() { mknod "$1" c 0 0; }

build_fixture() {
  local img=$1 d i j name half
  log "building $SCALE fixture in $img (one-off; cached in $CACHE_IMG)"
  rm -f "$img"
  truncate -s "${IMG_GIB}G" "$img"
  # Initialise inode tables and journal now, not in the background during the measurements.
  mkfs.ext4 -q -F -N "$INODES" -E lazy_itable_init=0,lazy_journal_init=0 "$img"
  attach_image "$img"
  mkdir -p "$FX"/{l1,l2,l3,lists,run}
  half=$((NDIRS / 2))
  # l3 (bottom): NDIRS dirs of 14 files, 0-8 KiB.
  for ((i = 0; i < NDIRS; i++)); do
    printf -v d 'd%03d' "$i"
    "$FSOPS" mkfiles "$FX/l3/$d" f 0 14 8192 "$((i + 1))"
  done
  # l2: 8 new files in the first half of the dirs; overrides of f00000 in the first 20 %,
  # whiteouts of f00001 in the next 15 %, and a whiteout of the last directory.
  for ((i = 0; i < half; i++)); do
    printf -v d 'd%03d' "$i"
    "$FSOPS" mkfiles "$FX/l2/$d" g 0 8 8192 "$((i + 100001))"
    if ((i < NDIRS / 5)); then
      "$FSOPS" mkfiles "$FX/l2/$d" f 0 1 8192 "$((i + 200001))"
    elif ((i < NDIRS * 35 / 100)); then
      whiteout "$FX/l2/$d/f00001"
    fi
  done
  printf -v d 'd%03d' "$((NDIRS - 1))"
  whiteout "$FX/l2/$d"
  # l1 (top): 4 new files in the second half; overrides of f00002 in 50-70 %, whiteouts of
  # f00003 in 70-85 %, and the second-to-last directory made opaque.
  for ((i = half; i < NDIRS - 1; i++)); do
    printf -v d 'd%03d' "$i"
    "$FSOPS" mkfiles "$FX/l1/$d" h 0 4 8192 "$((i + 300001))"
    if ((i < NDIRS * 7 / 10)); then
      "$FSOPS" mkfiles "$FX/l1/$d" f 2 3 8192 "$((i + 400001))"
    elif ((i < NDIRS * 85 / 100)); then
      whiteout "$FX/l1/$d/f00003"
    fi
  done
  printf -v d 'd%03d' "$((NDIRS - 2))"
  setfattr -n trusted.overlay.opaque -v y "$FX/l1/$d"
  # The big merged directory: 40 % of its entries in l3, 30 % in l2, 30 % in l1.
  "$FSOPS" mkfiles "$FX/l3/big" e 0 $((BIGDIR * 4 / 10)) 0 1
  "$FSOPS" mkfiles "$FX/l2/big" e $((BIGDIR * 4 / 10)) $((BIGDIR * 7 / 10)) 0 1
  "$FSOPS" mkfiles "$FX/l1/big" e $((BIGDIR * 7 / 10)) "$BIGDIR" 0 1
  # Big files (random data, so nothing can be deduplicated or skipped).
  mkdir -p "$FX/l3/data"
  head -c "$((BIG_MIB << 20))" /dev/urandom >"$FX/l3/data/big1g"
  head -c "$((MID_MIB << 20))" /dev/urandom >"$FX/l3/data/big256m"

  # unionfs-fuse variants of l1 and l2: same files (hard links), whiteouts in its own format
  # (BRANCH/META/PATH_HIDDEN~). A whiteout of a directory hides it only in lower branches,
  # which is what an opaque directory means, so both can be expressed. META is .unionfs-fuse in
  # Debian's 1.0 (its binary says so; its manual's .unionfs is that of later versions).
  for j in 1 2; do
    cp -al "$FX/l$j" "$FX/l${j}u"
    while IFS= read -r name; do
      rm "$FX/l${j}u/$name"
      mkdir -p "$FX/l${j}u/$UNIONFS_META/$(dirname "$name")"
      : >"$FX/l${j}u/$UNIONFS_META/${name}_HIDDEN~"
    done < <(cd "$FX/l$j" && find . -type c -printf '%P\n')
  done
  printf -v d 'd%03d' "$((NDIRS - 2))"
  mkdir -p "$FX/l1u/$UNIONFS_META"
  : >"$FX/l1u/$UNIONFS_META/${d}_HIDDEN~"

  # Lists for rename/unlink: NRENAME lower files each, visible in the merged view.
  : >"$FX/lists/rename"
  : >"$FX/lists/unlink"
  for ((i = 0; i < NRENAME / 2; i++)); do
    printf -v d 'd%03d' "$i"
    printf '%s/f00005\n%s/f00006\n' "$d" "$d" >>"$FX/lists/rename"
    printf '%s/f00007\n%s/f00008\n' "$d" "$d" >>"$FX/lists/unlink"
  done

  # Tarball of NTAR files (20 per dir, 0-8 KiB), extracted by the untar metric.
  for ((i = 0; i < NTAR_DIRS; i++)); do
    printf -v d 'd%03d' "$i"
    "$FSOPS" mkfiles "$FX/tarsrc/$d" t 0 20 8192 "$((i + 500001))"
  done
  tar -cf "$FX/src.tar" -C "$FX/tarsrc" .
  rm -rf "$FX/tarsrc"

  # Many layers: a payload layer p (ML_DIRS dirs x ML_FILES files) under up to 499 small layers,
  # each adding one file to one of the payload's directories (so those directories merge).
  mkdir -p "$FX/ml"
  for ((i = 0; i < ML_DIRS; i++)); do
    printf -v d 'q%02d' "$i"
    "$FSOPS" mkfiles "$FX/ml/p/$d" f 0 "$ML_FILES" 4096 "$((i + 600001))"
    for ((j = 0; j < ML_FILES; j++)); do printf '%s/f%05d\n' "$d" "$j"; done
  done >"$FX/lists/payload"
  for ((i = 1; i < 500; i++)); do
    printf -v d 'q%02d' "$((i % ML_DIRS))"
    mkdir -p "$FX/ml/$i/$d"
    echo "$i" >"$FX/ml/$i/$d/fill$i"
  done

  # A million entries (1,000 dirs x 1,000 empty files) for the daemon-memory metric.
  "$FSOPS" mkempty "$FX/m1" "$M1_DIRS" "$M1_FILES"

  echo "$FIXTURE_VERSION $SCALE" >"$FX/VERSION"
  sync
  detach_image
}

prepare_fixture() {
  mkdir -p "$(dirname "$CACHE_IMG")"
  if [[ $REBUILD == 1 || ! -f $CACHE_IMG ]]; then
    build_fixture "$CACHE_IMG.tmp"
    mv "$CACHE_IMG.tmp" "$CACHE_IMG"
  fi
  log "copying cached fixture to a fresh image $RUN_IMG"
  cp --sparse=always "$CACHE_IMG" "$RUN_IMG"
  attach_image "$RUN_IMG"
  [[ $(cat "$FX/VERSION") == "$FIXTURE_VERSION $SCALE" ]] || die "fixture version mismatch"
}

# ---------------------------------------------------------------------------------------------
# Mounting. A stack is "main" (the three layers), "mlN" (N of the many layers) or "m1".
# lowers_of IMPL STACK -> sets BASE (a directory) and LOWERS (colon list relative to BASE, top first).
lowers_of() {
  local impl=$1 stack=$2 n i
  case $stack in
    main)
      BASE=$FX
      if [[ $impl == unionfs-fuse ]]; then LOWERS=l1u:l2u:l3; else LOWERS=l1:l2:l3; fi ;;
    m1) BASE=$FX LOWERS=m1 ;;
    apt) BASE=$FX LOWERS=rootfs ;;
    ml*)
      n=${stack#ml}
      BASE=$FX/ml LOWERS=""
      for ((i = 1; i < n; i++)); do LOWERS+="$i:"; done
      LOWERS+=p ;;
    *) die "unknown stack $stack" ;;
  esac
}

abs_list() { # BASE LIST -> colon list of absolute paths
  local base=$1 out="" item
  local -a items
  IFS=: read -ra items <<<"$2"
  for item in "${items[@]}"; do out+="$base/$item:"; done
  echo "${out%:}"
}

# mount_union IMPL STACK TAG: fresh upper and work dirs, mount on $MNT, wait until it is ready.
# Sets MOUNT_MS and DAEMON_PID (0 for the kernel). Returns non-zero (and says why) on failure.
# --metacopy: kernel overlayfs and layerfuse both make metadata-only copies (the peers have no
# such mode and run as always; fuse-overlayfs and unionfs-fuse never fsync a copy-up anyway).
KERNEL_MC="" LF_MC=()
if [[ $METACOPY == 1 ]]; then
  KERNEL_MC=",redirect_dir=on,metacopy=on"
  LF_MC=(--metacopy on)
fi
# --volatile: neither syncs copy-ups nor callers' fsyncs (kernel `volatile`, layerfuse --volatile).
if [[ $VOLATILE == 1 ]]; then
  KERNEL_MC+=",volatile"
  LF_MC+=(--volatile)
fi

mount_union() {
  local impl=$1 stack=$2 tag=$3 upper work t0 t1 lowers_abs branches b logf
  lowers_of "$impl" "$stack"
  upper=$FX/run/$tag/u work=$FX/run/$tag/w
  rm -rf "$FX/run/$tag"
  mkdir -p "$upper" "$work" "$MNT"
  logf=$OUTDIR/logs/$tag.log
  DAEMON_PID=0
  case $impl in
    kernel)
      # Relative lowers keep 500 layers under the 4 KiB limit of mount(2)'s option page.
      t0=$(now)
      (cd "$BASE" && mount -t overlay overlay \
        -o "lowerdir=$LOWERS,upperdir=$upper,workdir=$work$KERNEL_MC" "$MNT") >"$logf" 2>&1 ||
        { log "kernel: mount failed: $(tail -n 3 "$logf")"; return 1; }
      t1=$(now)
      echo "$MNT 0" >>"$STATE/mounts" ;;
    fuse-overlayfs|fuse-overlayfs2|layerfuse|layerfuse-uring|layerfuse-dev|layerfuse-splice|layerfuse-base|unionfs-fuse)
      lowers_abs=$(abs_list "$BASE" "$LOWERS")
      t0=$(now)
      case $impl in
        fuse-overlayfs)
          fuse-overlayfs -f -o "lowerdir=$lowers_abs,upperdir=$upper,workdir=$work" "$MNT" \
            >"$logf" 2>&1 & ;;
        fuse-overlayfs2)
          "$FO2_BIN" -f -o "lowerdir=$lowers_abs,upperdir=$upper,workdir=$work" "$MNT" \
            >"$logf" 2>&1 & ;;
        layerfuse|layerfuse-uring|layerfuse-dev|layerfuse-splice)
          # layerfuse: --transport auto (io_uring where the kernel enables it);
          # layerfuse-uring / -dev / -splice: one transport, whatever the kernel offers.
          local transport=auto
          [[ $impl == layerfuse-uring ]] && transport=uring
          [[ $impl == layerfuse-dev ]] && transport=dev
          [[ $impl == layerfuse-splice ]] && transport=splice
          "$LF_BIN" mount --lower "$lowers_abs" --upper "$upper" --work "$work" "${LF_MC[@]}" \
            --transport "$transport" -f "$MNT" >"$logf" 2>&1 & ;;
        layerfuse-base)
          "$LF_BASE_BIN" mount --lower "$lowers_abs" --upper "$upper" --work "$work" "${LF_MC[@]}" \
            -f "$MNT" >"$logf" 2>&1 & ;;
        unionfs-fuse)
          branches="$upper=RW"
          IFS=: read -ra b <<<"$lowers_abs"
          branches+=$(printf ':%s=RO' "${b[@]}")
          # Debian's 1.0 prints a debugging line per directory entry on stdout: throw that away
          # as its daemon mode does, rather than timing writes to a log file.
          unionfs -f -o cow,hide_meta_files "$branches" "$MNT" >/dev/null 2>"$logf" & ;;
      esac
      DAEMON_PID=$!
      echo "$MNT $DAEMON_PID" >>"$STATE/mounts"
      if ! "$FSOPS" waitmount "$MNT" "$DAEMON_PID" 60 2>>"$logf"; then
        log "$impl: mount failed: $(tail -n 3 "$logf" | tr '\n' ' ')"
        unmount_all
        return 1
      fi
      t1=$(now) ;;
  esac
  MOUNT_MS=$(calc "($t1 - $t0) * 1000")
}

umount_union() {
  unmount_all
  rm -rf "$FX/run"/*
}

# ---------------------------------------------------------------------------------------------
# Results: one line per measurement in results.csv (rep,impl,metric,value).
record() { # METRIC VALUE
  [[ $2 =~ ^[0-9][0-9.e+-]*$ ]] || { log "  $IMPL $1: no figure (got '$2')"; return 1; }
  echo "$REP,$IMPL,$1,$2" >>"$OUTDIR/results.csv"
  log "  $IMPL $1 = $2"
}

# Metric catalogue: name|label|unit|better (low, high, or info = not compared).
metric_defs() {
  local n
  cat <<EOF
statwalk_cold|stat walk, cold ($(entries_main) entries)|s|low
statwalk_warm|stat walk, warm|s|low
readdir_cold|big readdir ($BIGDIR entries), cold|ms|low
readdir_warm|big readdir, warm|ms|low
seqread|sequential read $BIG_MIB MiB, cold (fio psync 1 MiB)|MiB/s|high
randread|random read 4 KiB, warm (fio psync, ${RR_SECS} s)|MiB/s|high
seqwrite|sequential write, new $WRITE_MIB MiB file (open to close)|MiB/s|high
copyup|copy-up: append 1 byte to the $MID_MIB MiB lower file|ms|low
chmod|chmod of the $MID_MIB MiB lower file|ms|low
chown|chown of the $MID_MIB MiB lower file|ms|low
touch|touch of the $MID_MIB MiB lower file|ms|low
create|create $NCREATE x 1 KiB files|s|low
delete|delete those $NCREATE files|s|low
untar|untar $NTAR files|s|low
rename|rename $NRENAME lower files|s|low
unlink|unlink $NRENAME lower files|s|low
EOF
  for n in $LAYERS; do echo "lookup_L$n|lookup, $n lowers, cold (per file)|us|low"; done
  for n in $LAYERS; do echo "walk_L$n|stat walk, $n lowers, cold|ms|low"; done
  for n in $LAYERS; do echo "mount_L$n|mount time, $n lowers|ms|low"; done
  cat <<EOF
walk1m|stat walk, $M1_ENTRIES entries, cold|s|low
rss_walk1m|daemon RSS after that walk|MiB|low
inodes_walk1m|FUSE inodes the kernel still held then (fuse_inode slab)|n|info
rss_per_inode|daemon RSS per inode the kernel held|B|low
rss_forget|daemon RSS after drop_caches 2 (kernel forgets)|MiB|low
par_walk_1|stat walk, 1 process, cold|s|low
par_walk_2|stat walk split over 2 processes, cold|s|low
par_create_1|create $NCREATE x 1 KiB, 1 process|s|low
par_create_2|create $NCREATE x 1 KiB, 2 processes|s|low
entries_main|entries seen by the stat walk (sanity)|n|info
entries_L500|entries seen with 500 lowers (sanity)|n|info
apt|apt-get install $APT_PKGS in a chroot of the union|s|low
EOF
}
entries_main() { [[ -f $OUTDIR/expected_entries ]] && cat "$OUTDIR/expected_entries" || echo "?"; }

# fio_bw MiB/s from terse output: field 7 is read KiB/s, field 48 write KiB/s.
fio_bw() { awk -F';' -v f="$1" 'NR == 1 { printf "%.1f\n", $f / 1024 }'; }

# ---------------------------------------------------------------------------------------------
# Metric groups. Each runs for one implementation ($IMPL) in one repetition ($REP), on fresh
# mounts with a fresh upper, and records its figures.
tag() { echo "$IMPL-$1-r$REP"; }

m_statwalk() {
  local out
  mount_union "$IMPL" main "$(tag statwalk)"
  cold
  out=$("$FSOPS" walk "$MNT")
  record statwalk_cold "${out% *}"
  record entries_main "${out#* }"
  out=$("$FSOPS" walk "$MNT")
  record statwalk_warm "${out% *}"
  umount_union
}

m_readdir() {
  local out
  mount_union "$IMPL" main "$(tag readdir)"
  cold
  out=$("$FSOPS" readdir "$MNT/big")
  record readdir_cold "$(calc "${out% *} * 1000")"
  [[ ${out#* } == "$BIGDIR" ]] || log "  $IMPL: big dir lists ${out#* } entries, expected $BIGDIR"
  out=$("$FSOPS" readdir "$MNT/big")
  record readdir_warm "$(calc "${out% *} * 1000")"
  umount_union
}

# Cold reads on this VM swing 2-3x from run to run (fresh page-cache memory comes back from the
# host at varying speed), so the cold data metrics take SAMPLES fresh mounts per repetition.
m_seqread() {
  local s
  for ((s = 1; s <= SAMPLES; s++)); do
    mount_union "$IMPL" main "$(tag "seqread$s")"
    cold
    record seqread "$(fio --minimal --readonly --name=seqread --filename="$MNT/data/big1g" \
      --rw=read --bs=1M --ioengine=psync --size="${BIG_MIB}M" | fio_bw 7)"
    umount_union
  done
}

m_randread() {
  mount_union "$IMPL" main "$(tag randread)"
  cold
  cat "$MNT/data/big256m" >/dev/null
  record randread "$(fio --minimal --readonly --name=randread --filename="$MNT/data/big256m" \
    --rw=randread --bs=4k --ioengine=psync --invalidate=0 --size="${MID_MIB}M" \
    --time_based --runtime="$RR_SECS" --randseed=42 | fio_bw 7)"
  umount_union
}

m_seqwrite() {
  local out
  mount_union "$IMPL" main "$(tag seqwrite)"
  cold
  out=$("$FSOPS" write "$MNT/new512m" "$WRITE_MIB")
  record seqwrite "$(calc "$WRITE_MIB / ${out% *}")"
  umount_union
}

m_copyup() {
  local s
  for ((s = 1; s <= SAMPLES; s++)); do
    mount_union "$IMPL" main "$(tag "copyup$s")"
    cold
    record copyup "$(calc "$("$FSOPS" append "$MNT/data/big256m") * 1000")"
    [[ $(stat -c %s "$MNT/data/big256m") == $(((MID_MIB << 20) + 1)) ]] ||
      log "  $IMPL: size after append is wrong"
    umount_union
  done
}

m_meta() {
  local op s
  for ((s = 1; s <= SAMPLES; s++)); do for op in chmod chown touch; do
    mount_union "$IMPL" main "$(tag "$op$s")"
    cold
    case $op in
      chmod) record chmod "$(calc "$("$FSOPS" chmod "$MNT/data/big256m" 600) * 1000")" ;;
      chown) record chown "$(calc "$("$FSOPS" chown "$MNT/data/big256m" 1000 1000) * 1000")" ;;
      touch) record touch "$(calc "$("$FSOPS" touch "$MNT/data/big256m") * 1000")" ;;
    esac
    umount_union
  done; done
}

m_smallfiles() {
  local out
  mount_union "$IMPL" main "$(tag smallfiles)"
  mkdir "$MNT/cr"
  cold
  out=$("$FSOPS" create "$MNT/cr" "$NCREATE" 1024)
  record create "${out% *}"
  out=$("$FSOPS" unlink "$MNT/cr" "$NCREATE")
  record delete "${out% *}"
  umount_union
}

m_untar() {
  local t0 t1
  mount_union "$IMPL" main "$(tag untar)"
  mkdir "$MNT/untar"
  cold
  cat "$FX/src.tar" >/dev/null # the tarball is read from the page cache for everyone
  t0=$(now)
  tar -xf "$FX/src.tar" -C "$MNT/untar"
  t1=$(now)
  record untar "$(elapsed "$t0" "$t1")"
  umount_union
}

m_renunlink() {
  local out
  mount_union "$IMPL" main "$(tag renunlink)"
  cold
  out=$("$FSOPS" renamelist "$MNT" "$FX/lists/rename")
  record rename "${out% *}"
  out=$("$FSOPS" unlinklist "$MNT" "$FX/lists/unlink")
  record unlink "${out% *}"
  umount_union
}

m_layers() {
  local n out
  for n in $LAYERS; do
    mount_union "$IMPL" "ml$n" "$(tag "ml$n")"
    record "mount_L$n" "$MOUNT_MS"
    cold
    out=$("$FSOPS" statlist "$MNT" "$FX/lists/payload")
    record "lookup_L$n" "$(calc "${out% *} / ${out#* } * 1000000")"
    umount_union
    mount_union "$IMPL" "ml$n" "$(tag "ml$n-walk")"
    cold
    out=$("$FSOPS" walk "$MNT")
    record "walk_L$n" "$(calc "${out% *} * 1000")"
    [[ $n == 500 ]] && record entries_L500 "${out#* }"
    umount_union
  done
}

rss_mib() { awk '/^VmRSS:/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"; }

m_rss() {
  local out
  mount_union "$IMPL" m1 "$(tag m1)"
  cold
  out=$("$FSOPS" walk "$MNT")
  record walk1m "${out% *}"
  [[ ${out#* } == "$M1_ENTRIES" ]] || log "  $IMPL: 1M walk saw ${out#* } entries, expected $M1_ENTRIES"
  if [[ $DAEMON_PID != 0 ]]; then
    local rss inodes
    rss=$(rss_mib "$DAEMON_PID")
    record rss_walk1m "$rss"
    # The kernel may forget inodes during the walk (memory reclaim on this VM), so the RSS
    # alone depends on how many it kept: also record that number and the cost per inode.
    inodes=$(awk '$1 == "fuse_inode" { print $2 }' /proc/slabinfo)
    if [[ -n $inodes && $inodes -gt 0 ]]; then
      record inodes_walk1m "$inodes"
      record rss_per_inode "$(calc "$rss * 1048576 / $inodes")"
    fi
    echo 2 >/proc/sys/vm/drop_caches
    sleep 3 # let the FORGET requests reach the daemon
    record rss_forget "$(rss_mib "$DAEMON_PID")"
  fi
  umount_union
}

m_parallel() {
  local t0 t1 half=$((NDIRS / 2)) i d p1 p2
  local -a first=() second=()
  # All small-file dirs but the last one, which l2 whites out.
  for ((i = 0; i < NDIRS - 1; i++)); do
    printf -v d '%s/d%03d' "$MNT" "$i"
    if ((i < half)); then first+=("$d"); else second+=("$d"); fi
  done
  mount_union "$IMPL" main "$(tag pwalk1)"
  cold
  t0=$(now)
  "$FSOPS" walk "${first[@]}" "${second[@]}" >/dev/null
  t1=$(now)
  record par_walk_1 "$(elapsed "$t0" "$t1")"
  umount_union

  mount_union "$IMPL" main "$(tag pwalk2)"
  cold
  t0=$(now)
  "$FSOPS" walk "${first[@]}" >/dev/null & p1=$!
  "$FSOPS" walk "${second[@]}" >/dev/null & p2=$!
  wait "$p1" "$p2"
  t1=$(now)
  record par_walk_2 "$(elapsed "$t0" "$t1")"
  umount_union

  mount_union "$IMPL" main "$(tag pcreate1)"
  mkdir "$MNT/p1"
  cold
  t0=$(now)
  "$FSOPS" create "$MNT/p1" "$NCREATE" 1024 >/dev/null
  t1=$(now)
  record par_create_1 "$(elapsed "$t0" "$t1")"
  umount_union

  mount_union "$IMPL" main "$(tag pcreate2)"
  mkdir "$MNT/p2a" "$MNT/p2b"
  cold
  t0=$(now)
  "$FSOPS" create "$MNT/p2a" $((NCREATE / 2)) 1024 >/dev/null & p1=$!
  "$FSOPS" create "$MNT/p2b" $((NCREATE / 2)) 1024 >/dev/null & p2=$!
  wait "$p1" "$p2"
  t1=$(now)
  record par_create_2 "$(elapsed "$t0" "$t1")"
  umount_union
}

# ---------------------------------------------------------------------------------------------
# Report: medians, min-max and ratios to the kernel, as text, CSV and markdown.
report() {
  local defs=$OUTDIR/metrics.txt
  metric_defs >"$defs"
  awk -F, -v impls="$IMPLS_RUN" -v summary="$OUTDIR/summary.csv" -v md="$OUTDIR/summary.md" '
    function median(arr, n,   i, j, t) {
      for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
      return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    function fmt(v) { return (v >= 100 || v == int(v)) ? sprintf("%.0f", v) : (v >= 10 ? sprintf("%.1f", v) : sprintf("%.3g", v)) }
    FNR == NR { split($0, f, "|"); order[++nm] = f[1]; label[f[1]] = f[2]; unit[f[1]] = f[3]; better[f[1]] = f[4]; next }
    FNR == 1 { next }
    { key = $3 SUBSEP $2; n[key]++; v[key, n[key]] = $4 + 0 }
    END {
      ni = split(impls, im, ",")
      print "metric,label,unit,impl,n,median,min,max,ratio_to_kernel" > summary
      hdr = "| metric | unit |"; sep = "|---|---|"
      for (i = 1; i <= ni; i++) { hdr = hdr " " im[i] " |"; sep = sep "---:|" }
      print "### Ratio to kernel overlayfs (median; >1 = slower or bigger than the kernel)\n" > md
      print hdr > md; print sep > md
      for (m = 1; m <= nm; m++) {
        name = order[m]
        for (i = 1; i <= ni; i++) {
          key = name SUBSEP im[i]; c = n[key] + 0
          if (c == 0) { med[i] = ""; continue }
          delete a; lo = hi = v[key, 1]
          for (k = 1; k <= c; k++) { a[k] = v[key, k]; if (a[k] < lo) lo = a[k]; if (a[k] > hi) hi = a[k] }
          med[i] = median(a, c); mn[i] = lo; mx[i] = hi; cnt[i] = c
        }
        kern = ""; for (i = 1; i <= ni; i++) if (im[i] == "kernel") kern = med[i]
        rrow = "| " label[name] " | " unit[name] " |"; arow = rrow; any = 0
        for (i = 1; i <= ni; i++) {
          if (med[i] == "") { rrow = rrow " n/a |"; arow = arow " n/a |"; continue }
          any = 1; ratio = ""
          if (better[name] != "info" && kern != "" && kern > 0 && med[i] > 0)
            ratio = (better[name] == "high") ? kern / med[i] : med[i] / kern
          printf "%s,\"%s\",%s,%s,%d,%s,%s,%s,%s\n", name, label[name], unit[name], im[i], cnt[i], med[i], mn[i], mx[i], (ratio == "" ? "" : sprintf("%.3f", ratio)) > summary
          rrow = rrow " " (ratio == "" ? "—" : sprintf("%.2f", ratio)) " |"
          arow = arow " " fmt(med[i]) (cnt[i] > 1 ? " (" fmt(mn[i]) "–" fmt(mx[i]) ")" : "") " |"
        }
        if (any) { rows_r[++nr] = rrow; rows_a[nr] = arow }
      }
      for (i = 1; i <= nr; i++) print rows_r[i] > md
      print "\n### Absolute figures: median (min–max)\n" > md
      print hdr > md; print sep > md
      for (i = 1; i <= nr; i++) print rows_a[i] > md
    }' "$defs" "$OUTDIR/results.csv"
  echo
  cat "$OUTDIR/summary.md"
  echo
  log "results: $OUTDIR/results.csv, $OUTDIR/summary.csv, $OUTDIR/summary.md"
}

# ---------------------------------------------------------------------------------------------
# Probe: mount each implementation once over the main stack; skip those that cannot mount.
probe() {
  local impl ok=() out
  for impl in "${IMPL_ARR[@]}"; do
    if [[ $impl == layerfuse-base && ! -x $LF_BASE_BIN ]]; then
      log "skipping layerfuse-base: no binary at '$LF_BASE_BIN' (--layerfuse-base PATH or \$LAYERFUSE_BASE)"
      continue
    fi
    if [[ $impl == layerfuse* && $impl != layerfuse-base && ! -x $LF_BIN ]]; then
      log "skipping $impl: no binary at $LF_BIN (use --layerfuse PATH or \$LAYERFUSE)"
      continue
    fi
    if [[ $impl == fuse-overlayfs2 && ! -x $FO2_BIN ]]; then
      log "skipping fuse-overlayfs2: no binary at $FO2_BIN (cargo install fuse-overlayfs --root DIR; --fuse-overlayfs2 DIR/bin/fuse-overlayfs)"
      continue
    fi
    IMPL=$impl
    set +e
    (
      set -e
      mount_union "$impl" "$PROBE_STACK" "probe-$impl"
      out=$(find "$MNT" -mindepth 1 -maxdepth 1 | wc -l)
      [[ $out -gt 0 ]] || { log "$impl: empty root after mount"; exit 1; }
      [[ -e $MNT/$PROBE_FILE ]] || { log "$impl: lower file $PROBE_FILE not visible"; exit 1; }
      umount_union
    )
    local rc=$?
    set -e
    unmount_all
    if [[ $rc == 0 ]]; then ok+=("$impl"); else log "skipping $impl: it failed to mount the fixture (log: $OUTDIR/logs/probe-$impl.log)"; fi
  done
  IMPL_ARR=("${ok[@]}")
}

write_env() {
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: $CMDLINE"
    echo "kernel: $(uname -r)"
    echo "cpu: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo) x $(nproc)"
    echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "fuse-overlayfs: $(fuse-overlayfs --version 2>&1 | awk '/fuse-overlayfs: version/ { print $3 }')"
    echo "unionfs-fuse: $(dpkg-query -W -f '${Version}' unionfs-fuse 2>/dev/null || echo '?')"
    echo "fio: $(fio --version)"
    echo "layerfuse: $LF_BIN $(git -C "$ROOT" describe --always --dirty 2>/dev/null || true)"
    if [[ -n $LF_BASE_BIN ]]; then
      echo "layerfuse-base: $LF_BASE_BIN $("$LF_BASE_BIN" --version 2>&1 | head -n 1 || true)"
    fi
    echo "fuse-overlayfs2: $FO2_BIN $("$FO2_BIN" --version 2>&1 | head -n 1 || true)"
    echo "enable_uring: $(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null || echo absent)"
    echo "fixture: v$FIXTURE_VERSION $SCALE; reps: $REPS; samples: $SAMPLES; settle: ${SETTLE}s; metacopy: $METACOPY; volatile: $VOLATILE"
  } >"$OUTDIR/env.txt"
}

# ---------------------------------------------------------------------------------------------
: "${OUT:=$WORK/results-$(date +%Y%m%d-%H%M%S)}"
OUTDIR=$OUT
mkdir -p "$OUTDIR/logs"

APT_PKGS="python3 git make"
PROBE_STACK=main PROBE_FILE=data/big256m
if [[ -n $WORKLOAD ]]; then
  PROBE_STACK=apt PROBE_FILE=usr/bin/apt-get
  # shellcheck source=scripts/bench-workload.sh
  source "$ROOT/scripts/bench-workload.sh"
  run_workload "$WORKLOAD"
  exit 0
fi

prepare_fixture
IFS=, read -ra IMPL_ARR <<<"$IMPLS"
IFS=, read -ra METRIC_ARR <<<"$METRICS"
for m in "${METRIC_ARR[@]}"; do
  [[ ",$ALL_METRICS," == *",$m,"* ]] || die "unknown metric group $m (known: $ALL_METRICS)"
done
probe
[[ ${#IMPL_ARR[@]} -gt 0 ]] || die "no implementation could mount"
IMPLS_RUN=$(IFS=,; echo "${IMPL_ARR[*]}")
write_env
echo "rep,impl,metric,value" >"$OUTDIR/results.csv"
log "implementations: $IMPLS_RUN; metrics: $METRICS; reps: $REPS; scale: $SCALE"

# The entry count the kernel sees is the reference for the others.
if [[ " ${IMPL_ARR[*]} " == *" kernel "* ]]; then
  (IMPL=kernel; mount_union kernel main probe-count && "$FSOPS" walk "$MNT" | awk '{ print $2 }' >"$OUTDIR/expected_entries"; umount_union) || true
  unmount_all
fi

nimpl=${#IMPL_ARR[@]}
for ((REP = 1; REP <= REPS; REP++)); do
  for group in "${METRIC_ARR[@]}"; do
    for ((k = 0; k < nimpl; k++)); do
      # Rotate the order each repetition so drift on the shared machine hits everyone alike.
      IMPL=${IMPL_ARR[$(((k + REP - 1) % nimpl))]}
      log "rep $REP/$REPS: $group on $IMPL"
      set +e
      ( set -e; "m_$group" )
      rc=$?
      set -e
      if [[ $rc != 0 ]]; then
        log "  $IMPL: $group failed (exit $rc); its figures are n/a this repetition"
        echo "$REP,$IMPL,$group,FAILED" >>"$OUTDIR/failures.csv"
      fi
      unmount_all
      rm -rf "${FX:?}/run"/*
    done
  done
done

report
