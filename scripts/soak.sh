#!/usr/bin/env bash
# Load soak of a layerfuse mount (docs/reliability.md "Load"). As root.
#   scripts/soak.sh --short           CI: ~3 minutes (stress-ng 60 s, churn 90 s)
#   scripts/soak.sh --long            30 min of stress-ng, then 30 min of churn
#   scripts/soak.sh --minutes N       N min of each (--seconds N: N s of each)
#   options: --stress-minutes N, --churn-minutes N (each phase alone), --bin PATH (a layerfuse binary; default: cargo build --release), --workers N
#            (stress-ng workers per stressor, default 2), --keep (keep the temp dir)
# Phase 1: `stress-ng --class filesystem` on a layerfuse mount and, at the same time and with the
#   same arguments, on kernel overlayfs over a copy of the same layers. Pass: every stressor that
#   fails on layerfuse also fails on the kernel; the mount is alive afterwards.
# Phase 2: 16 processes creating, renaming, unlinking, reading and listing files (half of them
#   from the lower layer) on the layerfuse mount. Pass: no error a racing workload cannot
#   explain (ENOENT, EEXIST, ENOTEMPTY); the daemon's fd count back at its start once the workers
#   are gone; its fd count and RSS printed every sample (each minute; 15 s in --short).
# The load runs at the lowest CPU and I/O priority (the daemon at its own): on a shared machine the
# rest goes on, and the daemon is measured, not starved.
# Throughout, a watchdog stats the mount every 5 s; an operation that does not return in 60 s
# dumps every daemon thread's stack (kernel stacks from /proc, user stacks with gdb) and fails.
# Exit 0 only if every check passed. Leaves nothing mounted.
set -euo pipefail
cd "$(dirname "$0")/.."

stress_secs=1800 churn_secs=1800 sample_secs=60 workers=2 bin="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --short) stress_secs=60 churn_secs=90 sample_secs=15; shift ;;
    --long) stress_secs=1800 churn_secs=1800; shift ;;
    --minutes) stress_secs=$(($2 * 60)) churn_secs=$(($2 * 60)); shift 2 ;;
    --seconds) stress_secs=$2 churn_secs=$2 sample_secs=$(($2 / 4 + 1)); shift 2 ;;
    --stress-minutes) stress_secs=$(($2 * 60)); shift 2 ;;
    --churn-minutes) churn_secs=$(($2 * 60)); shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "soak.sh: run as root (it mounts kernel overlayfs and FUSE)" >&2
  exit 1
fi
need=()
for p in stress-ng gdb python3 fuse3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
modprobe overlay 2>/dev/null || true
modprobe fuse 2>/dev/null || true
if [ -z "$bin" ]; then
  cargo build --release --quiet -p layerfuse --bin layerfuse
  bin=${CARGO_TARGET_DIR:-target}/release/layerfuse
fi

# Under /tmp/lft/: .ci/run's cleanup unmounts and ends whatever is left there if we are killed.
root=/tmp/lft/soak-$$
mkdir -p "$root"/{lower,kl,lu,lw,lm,ku,kw,km}
fails=0
fail() { echo "SOAK FAIL: $*"; fails=$((fails + 1)); }
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
daemon=""
bg_pids=()
fusectl=0
if [ ! -e /sys/fs/fuse/connections/version ] && ! mountpoint -q /sys/fs/fuse/connections; then
  mount -t fusectl fusectl /sys/fs/fuse/connections && fusectl=1
fi
cleanup() {
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for m in "$root/lm" "$root/km"; do
    if mountpoint -q "$m"; then umount "$m" 2>/dev/null || umount -l "$m" || true; fi
  done
  if [ -n "$daemon" ]; then
    for _ in $(seq 200); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$daemon" 2>/dev/null || true
  fi
  if [ "$fusectl" = 1 ]; then umount /sys/fs/fuse/connections 2>/dev/null || true; fi
  if [ "$keep" = 0 ]; then rm -rf "$root"; else echo "kept $root"; fi
}
trap cleanup EXIT

# The lower layer: the churn's files (half of its names exist below) and a few big files.
python3 - "$root/lower" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(8):
    p = os.path.join(root, "churn", f"d{d}")
    os.makedirs(p)
    for f in range(0, 64, 2):
        with open(os.path.join(p, f"f{f}"), "wb") as fh:
            fh.write(os.urandom(64 + 97 * f))
os.makedirs(os.path.join(root, "stress"))
os.makedirs(os.path.join(root, "big"))
for i in range(4):
    with open(os.path.join(root, "big", f"b{i}"), "wb") as fh:
        fh.write(os.urandom(1 << 20))
EOF
cp -a "$root/lower/." "$root/kl/"

"$bin" mount --lower "$root/lower" --upper "$root/lu" --work "$root/lw" -f "$root/lm" \
  >"$root/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 400); do
  grep -q " $root/lm fuse" /proc/mounts && break
  kill -0 "$daemon" 2>/dev/null || { cat "$root/daemon.log"; echo "soak.sh: layerfuse exited" >&2; exit 1; }
  sleep 0.05
done
grep -q " $root/lm fuse" /proc/mounts || { echo "soak.sh: the mount did not appear" >&2; exit 1; }
mount -t overlay overlay \
  -o "lowerdir=$root/kl,upperdir=$root/ku,workdir=$root/kw,redirect_dir=on,index=on" "$root/km"
# The FUSE connection: /sys/fs/fuse/connections/<minor of the mount's device>.
conn=$(awk -v m="$root/lm" '$5 == m {split($3, d, ":"); print d[2]}' /proc/self/mountinfo)
log "layerfuse pid $daemon on $root/lm (connection $conn), kernel overlayfs on $root/km"

fds() { ls "/proc/$daemon/fd" 2>/dev/null | wc -l; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$daemon/status" 2>/dev/null || echo 0; }
sample() {
  echo "$(date +%s) $(fds) $(rss_kib)" >>"$root/samples"
  log "sample: daemon fds $(fds), RSS $(rss_kib) KiB, threads $(ls /proc/$daemon/task | wc -l)," \
    "waiting $(cat /sys/fs/fuse/connections/$conn/waiting 2>/dev/null || echo '?')"
}

# The watchdog: a stat of the mount every 5 s that must return within 60 s.
watchdog() {
  while sleep 5; do
    if ! timeout -s KILL 60 stat "$root/lm/stress" >/dev/null 2>&1; then
      if ! kill -0 "$daemon" 2>/dev/null; then echo "WATCHDOG: the daemon is gone"; exit 1; fi
      echo "WATCHDOG: an operation on the mount waited over 60 s" \
        "(waiting $(cat /sys/fs/fuse/connections/$conn/waiting 2>/dev/null)); daemon threads:"
      for t in /proc/$daemon/task/*; do
        echo "--- thread ${t##*/} ($(cat "$t/comm")) kernel stack:"; cat "$t/stack" 2>/dev/null
      done
      gdb -batch -p "$daemon" -ex 'thread apply all bt' 2>&1 | grep -v '^\[New LWP'
      touch "$root/stuck"
      # Nothing else wakes the callers blocked in the daemon (stress-ng, churn, the stat after
      # phase 1): abort the connection so each of them gets ENOTCONN and the run ends in the
      # fail checks below instead of hanging.
      echo 1 >"/sys/fs/fuse/connections/$conn/abort"
      exit 1
    fi
  done
}
watchdog &
bg_pids+=($!)
sampler() { while sleep "$sample_secs"; do sample; done; }

# ---- Phase 1: stress-ng on both, side by side --------------------------------------------------
# Left out: stressors that do not work on the path given (bind-mount, binderfs and procfs mount
# or read elsewhere, verity needs an fs-verity filesystem) or not on a filesystem at all (dup,
# eventfd, ioprio). Sizes are bounded so two runs fit on a small disk.
# In the mount: some stressors make files in the current directory too.
stress() {
  cd "$1" && nice -n 19 ionice -c 3 stress-ng --class filesystem --all "$workers" \
    --exclude bind-mount,binderfs,procfs,verity,dup,eventfd,ioprio \
    --temp-path "$1" --timeout "${stress_secs}s" --metrics-brief \
    --hdd-bytes 32M --iomix-bytes 32M --fallocate-bytes 32M --sync-file-bytes 32M \
    --dirdeep-inodes 20000 >"$2" 2>&1
}
sample
sampler &
bg_pids+=($!)
log "phase 1: stress-ng --class filesystem --all $workers for ${stress_secs}s on both mounts"
(stress "$root/lm/stress" "$root/stress-layerfuse.txt") & s1=$!
(stress "$root/km/stress" "$root/stress-kernel.txt") & s2=$!
rc1=0 rc2=0
wait "$s1" || rc1=$?
wait "$s2" || rc2=$?
# A failing stressor: "stress-ng: fail: [PID] NAME: ...".
failed() { sed -n 's/^stress-ng: fail: *\[[0-9]*\] \([a-z0-9-]*\):.*/\1/p' "$1" | sort -u; }
lf_failed=$(failed "$root/stress-layerfuse.txt") k_failed=$(failed "$root/stress-kernel.txt")
log "stress-ng exit: layerfuse $rc1, kernel $rc2"
log "failed stressors: layerfuse [${lf_failed//$'\n'/ }] kernel [${k_failed//$'\n'/ }]"
for s in $lf_failed; do
  if ! grep -qx "$s" <<<"$k_failed"; then
    fail "stressor $s fails on layerfuse only:"
    grep -E "^stress-ng: fail: *\[[0-9]+\] $s:" "$root/stress-layerfuse.txt" | head -5 || true
  fi
done
if [ "$rc1" != 0 ] && [ -z "$lf_failed" ]; then
  fail "stress-ng on layerfuse exited $rc1 without a failing stressor:"
  grep -E 'error|fail' "$root/stress-layerfuse.txt" | head -10 || true
fi
grep -E '^stress-ng: (info|fail|error).*(completed|fail|error)' "$root/stress-layerfuse.txt" | tail -3 || true
kill -0 "$daemon" 2>/dev/null || fail "the daemon died during stress-ng"
stat "$root/lm/churn" >/dev/null || fail "the mount is not answering after stress-ng"

# ---- Phase 2: churn ----------------------------------------------------------------------------
cat >"$root/churn.py" <<'EOF'
import errno, json, os, random, sys, time
root, seed, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rnd = random.Random(seed)
ok_errnos = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY}
counts, unexpected = {}, []
def name(): return os.path.join(root, f"d{rnd.randrange(8)}", f"f{rnd.randrange(64)}")
def sub(): return os.path.join(root, f"d{rnd.randrange(8)}", f"s{rnd.randrange(4)}")
def create():
    fd = os.open(name(), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try: os.write(fd, os.urandom(rnd.randrange(1, 16384)))
    finally: os.close(fd)
def append():
    fd = os.open(name(), os.O_WRONLY | os.O_APPEND)
    try: os.write(fd, b"x" * rnd.randrange(1, 512))
    finally: os.close(fd)
def read():
    with open(name(), "rb") as f: f.read()
def readdir():
    d = os.path.join(root, f"d{rnd.randrange(8)}")
    with os.scandir(d) as it:
        for e in it: e.is_file(follow_symlinks=False)
ops = [("create", create, 3), ("append", append, 2), ("read", read, 4), ("readdir", readdir, 2),
       ("rename", lambda: os.rename(name(), name()), 3), ("unlink", lambda: os.unlink(name()), 2),
       ("stat", lambda: os.lstat(name()), 3), ("mkdir", lambda: os.mkdir(sub()), 1),
       ("rmdir", lambda: os.rmdir(sub()), 1)]
table = [(n, f) for n, f, w in ops for _ in range(w)]
end = time.monotonic() + secs
while time.monotonic() < end:
    n, f = rnd.choice(table)
    try:
        f()
        counts[n] = counts.get(n, 0) + 1
    except OSError as e:
        if e.errno in ok_errnos:
            counts[n + "-race"] = counts.get(n + "-race", 0) + 1
        else:
            unexpected.append(f"{n}: {e}")
print(json.dumps({"seed": seed, "ops": sum(counts.values()), "counts": counts,
                  "unexpected": len(unexpected), "first": unexpected[:5]}))
EOF
fd_before=$(fds)
churn_t0=$(date +%s)
log "phase 2: 16 churn processes for ${churn_secs}s on $root/lm/churn (daemon fds $fd_before)"
churn_pids=()
for i in $(seq 16); do
  nice -n 19 ionice -c 3 python3 "$root/churn.py" "$root/lm/churn" "$i" "$churn_secs" >"$root/churn-$i.json" &
  churn_pids+=($!)
done
for p in "${churn_pids[@]}"; do wait "$p" || fail "churn worker $p exited with $?"; done
sample
read -r total bad < <(python3 - "$root" <<'PY'
import json, sys
total = bad = 0
for i in range(1, 17):
    r = json.load(open(f"{sys.argv[1]}/churn-{i}.json"))
    total += r["ops"]; bad += r["unexpected"]
    if r["unexpected"]: print(f"worker {i}: {json.dumps(r)}", file=sys.stderr)
print(total, bad)
PY
)
log "churn: $total operations, $bad unexpected errors"
[ "$bad" = 0 ] || fail "$bad unexpected errors in the churn"
# Flat: once the workers are gone every file they opened is released (FUSE_RELEASE may trail the
# close: wait for it, bounded), so the daemon holds at most what it held before plus its cache of
# open directories (256, src/overlay/dircache.rs). RSS: the last sample is within 25% + 8 MiB of
# the one a third into the churn (a leak of a few bytes per operation shows, warm-up does not).
cache=256
fd_after=$(fds)
for _ in $(seq 100); do
  fd_after=$(fds)
  [ "$fd_after" -le $((fd_before + cache)) ] && break
  sleep 0.1
done
log "daemon fds: $fd_before before the churn, $fd_after after it"
[ "$fd_after" -le $((fd_before + cache)) ] ||
  fail "the daemon holds $((fd_after - fd_before)) more fds after the churn (bound: $cache)"
read -r rss_third rss_last < <(awk -v t0="$churn_t0" -v d="$churn_secs" \
  '$1 >= t0 + d / 3 && !a {a = $3} $1 >= t0 {l = $3} END {print a + 0, l + 0}' "$root/samples")
log "daemon RSS: $rss_third KiB a third into the churn, $rss_last KiB at its end"
[ "$rss_last" -le $((rss_third * 5 / 4 + 8192)) ] || fail "the daemon's RSS grew during the churn"
kill -0 "$daemon" 2>/dev/null || fail "the daemon died during the churn"
stat "$root/lm/churn" >/dev/null || fail "the mount is not answering after the churn"
[ ! -e "$root/stuck" ] || fail "the watchdog found an operation waiting over 60 s"
kill "${bg_pids[@]}" 2>/dev/null || true

umount "$root/km"
umount "$root/lm"
for _ in $(seq 400); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$daemon" 2>/dev/null; then fail "the daemon did not exit after its unmount"; fi
wait "$daemon" || fail "the daemon exited with $? after its unmount"
daemon=""
if [ "$fails" = 0 ]; then log "SOAK PASS"; else log "SOAK FAIL ($fails checks)"; exit 1; fi
