# shellcheck shell=bash
# The real workload of performance.md, sourced by scripts/bench.sh for `--workload apt`:
# apt-get installs python3, git and make (already downloaded) in a chroot whose root is the
# union over a debootstrap minbase rootfs. dpkg unpacks thousands of files and fsyncs each.
#
# The rootfs (debootstrap + apt-get --download-only) is built once on its own ext4 image and
# cached in $WORK/cache; each run copies it to a fresh image. The Debian mirror is the one this
# machine's apt uses (or --mirror URL / $BENCH_MIRROR).

APT_VERSION=1

debian_mirror() {
  local m=${BENCH_MIRROR:-}
  if [[ -z $m && -f /etc/apt/sources.list.d/debian.sources ]]; then
    m=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $m && -f /etc/apt/sources.list ]]; then
    m=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list)
  fi
  [[ -n $m ]] || die "no Debian mirror found in apt's sources; set BENCH_MIRROR=URL"
  echo "$m"
}

# Mounts inside the chroot are recorded after the union, and unmount_all undoes them in reverse.
chroot_mounts() {
  local root=$1
  mount -t proc proc "$root/proc" && echo "$root/proc 0" >>"$STATE/mounts"
  mount --bind /dev "$root/dev" && echo "$root/dev 0" >>"$STATE/mounts"
}

build_apt_image() {
  local img=$1 mirror
  mirror=$(debian_mirror)
  log "building the apt workload rootfs in $img (debootstrap minbase bookworm from $mirror; one-off)"
  rm -f "$img"
  truncate -s 6G "$img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
  attach_image "$img"
  debootstrap --variant=minbase bookworm "$FX/rootfs" "$mirror" >"$OUTDIR/logs/debootstrap.log" 2>&1 ||
    die "debootstrap failed: $(tail -n 3 "$OUTDIR/logs/debootstrap.log")"
  chroot_mounts "$FX/rootfs"
  chroot "$FX/rootfs" apt-get update -qq >"$OUTDIR/logs/apt-prepare.log" 2>&1
  # shellcheck disable=SC2086 # APT_PKGS is a word list
  chroot "$FX/rootfs" apt-get install -y -qq --download-only --no-install-recommends $APT_PKGS \
    >>"$OUTDIR/logs/apt-prepare.log" 2>&1 || die "apt-get --download-only failed (see $OUTDIR/logs/apt-prepare.log)"
  unmount_all
  echo "apt $APT_VERSION" >"$FX/VERSION"
  sync
  detach_image
}

m_apt() {
  local t0 t1 rc
  local -a profiled=()
  mount_union "$IMPL" apt "$(tag apt)"
  chroot_mounts "$MNT"
  # --profile: the kernel's own count and timing of each FUSE request of this mount.
  if [[ $PROFILE == 1 && $IMPL != kernel ]]; then
    profiled=("$ROOT/scripts/fuse-profile.sh" --conn "$(mountpoint -d "$MNT" | cut -d: -f2)" --out "$OUTDIR/profile-$(tag apt).txt" --)
  fi
  cold
  t0=$(now)
  # shellcheck disable=SC2086 # APT_PKGS is a word list
  "${profiled[@]}" chroot "$MNT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-download \
    --no-install-recommends $APT_PKGS >"$OUTDIR/logs/$(tag apt)-run.log" 2>&1 && rc=0 || rc=$?
  t1=$(now)
  if [[ $rc != 0 ]]; then
    log "  $IMPL: apt-get failed (exit $rc): $(tail -n 2 "$OUTDIR/logs/$(tag apt)-run.log" | tr '\n' ' ')"
    return 1
  fi
  chroot "$MNT" sh -c 'command -v python3 git make' >/dev/null || { log "  $IMPL: packages not usable after install"; return 1; }
  record apt "$(elapsed "$t0" "$t1")"
  umount_union
}

run_workload() {
  [[ $1 == apt ]] || die "unknown workload $1 (known: apt)"
  local img=$WORK/cache/apt-v$APT_VERSION.img k rc
  mkdir -p "$WORK/cache"
  if [[ $REBUILD == 1 || ! -f $img ]]; then
    build_apt_image "$img.tmp"
    mv "$img.tmp" "$img"
  fi
  log "copying cached rootfs image to a fresh image $RUN_IMG"
  cp --sparse=always "$img" "$RUN_IMG"
  attach_image "$RUN_IMG"
  [[ $(cat "$FX/VERSION") == "apt $APT_VERSION" ]] || die "apt image version mismatch"
  mkdir -p "$FX/run"
  # shellcheck disable=SC2153 # IMPLS is set by bench.sh
  IFS=, read -ra IMPL_ARR <<<"$IMPLS"
  probe
  [[ ${#IMPL_ARR[@]} -gt 0 ]] || die "no implementation could mount"
  # shellcheck disable=SC2034 # read by report() in bench.sh
  IMPLS_RUN=$(IFS=,; echo "${IMPL_ARR[*]}")
  write_env
  echo "rep,impl,metric,value" >"$OUTDIR/results.csv"
  local nimpl=${#IMPL_ARR[@]}
  for ((REP = 1; REP <= REPS; REP++)); do
    for ((k = 0; k < nimpl; k++)); do
      IMPL=${IMPL_ARR[$(((k + REP - 1) % nimpl))]}
      log "rep $REP/$REPS: apt on $IMPL"
      set +e
      ( set -e; m_apt )
      rc=$?
      set -e
      [[ $rc == 0 ]] || echo "$REP,$IMPL,apt,FAILED" >>"$OUTDIR/failures.csv"
      unmount_all
      rm -rf "${FX:?}/run"/*
    done
  done
  report
}
