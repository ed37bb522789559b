#!/usr/bin/env bash
# One FUSE round trip, measured on each transport: statx(AT_STATX_FORCE_SYNC) of a file of the
# union, which makes the kernel send a GETATTR every time whatever the attribute cache holds
# (fuse_update_get_attr), N times in a loop; µs per call. Kernel overlayfs (no round trip) gives
# the cost of the loop and the syscall itself. Runs alternate (kernel, dev, uring, repeated) so
# load from elsewhere hits all alike; prints every run and the medians.
#
#   sudo scripts/bench-roundtrip.sh [--calls N] [--runs N] [--layerfuse PATH] [--impls "kernel dev uring splice"]
#
# The uring rows need /sys/module/fuse/parameters/enable_uring=Y (this script never changes it).
set -euo pipefail
CALLS=200000
RUNS=5
IMPLS="kernel dev uring"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LF_BIN=${LAYERFUSE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/layerfuse}
while [[ $# -gt 0 ]]; do
  case $1 in
    --calls) CALLS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --layerfuse) LF_BIN=$2; shift 2 ;;
    --impls) IMPLS=${2//,/ }; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "needs root" >&2; exit 1; }
T=$(mktemp -d /var/tmp/lf-roundtrip.XXXXXX)
PID=0
cleanup() {
  mountpoint -q "$T/m" && umount "$T/m" || true
  [[ $PID != 0 ]] && kill "$PID" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T"/{l,u,w,m}
echo data >"$T/l/f"

loop() { # PATH -> µs per statx(FORCE_SYNC)
  python3 - "$1" "$CALLS" <<'PY'
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
path, n = sys.argv[1].encode(), int(sys.argv[2])
buf = ctypes.create_string_buffer(256)
statx, AT_FDCWD, FORCE_SYNC, MASK = libc.statx, -100, 0x2000, 0x7ff
t0 = time.perf_counter()
for _ in range(n):
    if statx(AT_FDCWD, path, FORCE_SYNC, MASK, buf) != 0:
        raise OSError(ctypes.get_errno(), "statx")
print(f"{(time.perf_counter() - t0) / n * 1e6:.2f}")
PY
}

run() { # IMPL -> µs
  local impl=$1 r
  rm -rf "$T/u" "$T/w"; mkdir -p "$T/u" "$T/w"
  if [[ $impl == kernel ]]; then
    mount -t overlay overlay -o "lowerdir=$T/l,upperdir=$T/u,workdir=$T/w" "$T/m"
  else
    "$LF_BIN" mount --lower "$T/l" --upper "$T/u" --work "$T/w" --transport "$impl" -f "$T/m" \
      >"$T/log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do mountpoint -q "$T/m" && break; sleep 0.05; done
  fi
  r=$(loop "$T/m/f")
  umount "$T/m"
  if [[ $PID != 0 ]]; then wait "$PID" || true; PID=0; fi
  echo "$r"
}

declare -A all
for i in $(seq "$RUNS"); do
  for impl in $IMPLS; do
    v=$(run "$impl"); all[$impl]+="$v "
    echo "run $i $impl: $v us"
  done
done
for impl in $IMPLS; do
  echo "median $impl: $(tr ' ' '\n' <<<"${all[$impl]}" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') us per statx"
done
