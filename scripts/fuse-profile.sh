#!/usr/bin/env bash
# Where a FUSE workload's time goes, by request type, measured by the kernel itself.
#
#   sudo scripts/fuse-profile.sh [--conn N] [--raw FILE] [--out FILE] -- COMMAND [ARGS...]
#
# Runs COMMAND with the kernel's `fuse_request_send` / `fuse_request_end` tracepoints on (in a
# private tracefs instance, so other tracing on the machine is left alone), then prints one line
# per opcode: how many requests, how many failed (and the commonest errno), and the summed and
# mean time from the request being queued to its reply. That time includes waiting for a daemon
# thread, so it is what the caller waited, not the daemon's CPU time. --conn N keeps only the
# FUSE connection N (the minor device of the mount: `stat -c %d MOUNTPOINT`, or the number after
# "0:" in /proc/self/mountinfo); by default every FUSE connection is counted. --raw FILE keeps the
# raw trace; --out FILE writes the table there instead of to stdout (COMMAND's own output
# stays where it was). Needs root and the kernel's fuse tracepoints (6.x). Nothing stays enabled.
set -euo pipefail

die() { echo "fuse-profile: $*" >&2; exit 1; }

CONN="" RAW="" REPORT=/dev/stdout
while [[ $# -gt 0 ]]; do
  case $1 in
    --conn) CONN=$2; shift 2 ;;
    --raw) RAW=$2; shift 2 ;;
    --out) REPORT=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $# -gt 0 ]] || die "no command given (see --help)"
[[ $(id -u) == 0 ]] || die "needs root (tracefs)"

TRACEFS=/sys/kernel/tracing
MOUNTED_TRACEFS=0
INST="" OUT=""
cleanup() {
  if [[ -n $INST ]]; then
    echo 0 >"$INST/events/fuse/enable" 2>/dev/null || true
    rmdir "$INST" 2>/dev/null || true
  fi
  [[ -z $OUT ]] || rm -f "$OUT"
  # Leave the machine's mounts as they were.
  if [[ $MOUNTED_TRACEFS == 1 ]]; then umount "$TRACEFS" 2>/dev/null || true; fi
}
trap cleanup EXIT
if [[ ! -d $TRACEFS/events ]]; then
  mount -t tracefs nodev "$TRACEFS" || die "cannot mount tracefs on $TRACEFS"
  MOUNTED_TRACEFS=1
fi
[[ -d $TRACEFS/events/fuse/fuse_request_send ]] || die "this kernel has no fuse tracepoints"

mkdir "$TRACEFS/instances/fuse-profile-$$" || die "cannot create a tracing instance in $TRACEFS/instances"
INST=$TRACEFS/instances/fuse-profile-$$
OUT=$(mktemp)

# 256 MiB per CPU holds ~3 million requests per CPU; the overrun count is checked below.
echo 262144 >"$INST/buffer_size_kb"
if [[ -n $CONN ]]; then
  echo "connection == $CONN" >"$INST/events/fuse/fuse_request_send/filter"
  echo "connection == $CONN" >"$INST/events/fuse/fuse_request_end/filter"
fi
echo 1 >"$INST/events/fuse/enable"
t0=$(date +%s.%N)
set +e
"$@"
rc=$?
set -e
t1=$(date +%s.%N)
echo 0 >"$INST/events/fuse/enable"

lost=$(awk '/^overrun:/ { s += $2 } END { print s + 0 }' "$INST"/per_cpu/cpu*/stats)
cat "$INST/trace" >"$OUT"
[[ -z $RAW ]] || cp "$OUT" "$RAW"

{
echo "command exited $rc after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s; events lost: $lost"
awk '
  BEGIN {
    split("1 EPERM 2 ENOENT 5 EIO 9 EBADF 13 EACCES 17 EEXIST 18 EXDEV 20 ENOTDIR 21 EISDIR 22 EINVAL 25 ENOTTY 28 ENOSPC 34 ERANGE 38 ENOSYS 39 ENOTEMPTY 61 ENODATA 95 EOPNOTSUPP", en, " ")
    for (i = 1; i in en; i += 2) ename[en[i]] = en[i + 1]
  }
  / fuse_request_send: / {
    for (i = 1; i <= NF; i++) {
      if ($i == "connection") c = $(i + 1)
      if ($i == "req") u = $(i + 1)
      if ($i == "opcode") { name = $(i + 2); gsub(/[()]/, "", name); sub(/^FUSE_/, "", name) }
      if ($i ~ /^[0-9]+\.[0-9]+:$/) { ts = $i; sub(/:$/, "", ts) }
    }
    start[c "/" u] = ts; op[c "/" u] = name
    next
  }
  / fuse_request_end: / {
    for (i = 1; i <= NF; i++) {
      if ($i == "connection") c = $(i + 1)
      if ($i == "req") u = $(i + 1)
      if ($i == "error") e = $(i + 1)
      if ($i ~ /^[0-9]+\.[0-9]+:$/) { ts = $i; sub(/:$/, "", ts) }
    }
    k = c "/" u
    if (!(k in start)) next
    o = op[k]; d = ts - start[k]
    n[o]++; t[o] += d; total += d; all++
    if (e != 0) { bad[o]++; errs[o "," e]++ }
    delete start[k]; delete op[k]
    next
  }
  END {
    for (k in start) { unanswered[op[k]]++ }   # FORGET has no reply; others were cut off
    printf "%-14s %9s %8s %-10s %10s %9s %6s\n", "opcode", "requests", "failed", "commonest", "total_ms", "mean_us", "share"
    for (o in n) {
      best = ""; bn = 0
      for (ke in errs) { split(ke, p, ","); if (p[1] == o && errs[ke] > bn) { bn = errs[ke]; best = p[2] } }
      printf "%-14s %9d %8d %-10s %10.1f %9.1f %5.1f%%\n", o, n[o], bad[o], (best == "" ? "-" : (-best in ename ? ename[-best] : "errno" best)), \
        t[o] * 1000, t[o] / n[o] * 1e6, (total > 0 ? 100 * t[o] / total : 0)
    }
    for (o in unanswered) printf "%-14s %9d %8s %-10s %10s %9s %6s\n", o, unanswered[o], "-", "no reply", "-", "-", "-"
    printf "%-14s %9d %8s %-10s %10.1f\n", "all answered", all, "", "", total * 1000
  }
' "$OUT" | { read -r header; echo "$header"; sort -k5 -g -r; }
} >"$REPORT"
exit "$rc"
