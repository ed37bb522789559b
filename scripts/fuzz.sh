#!/usr/bin/env bash
# Long differential fuzzing of layerfuse against kernel overlayfs (see docs/conformance.md).
#   scripts/fuzz.sh --minutes 30          random seeds for 30 minutes, stop at the first mismatch
#   scripts/fuzz.sh --seed 123456         replay one seed (prints its ops with --trace)
#   options: --ops N (ops per sequence, default 60), --kernel (kernel on both sides: harness
#            self-check), --base B (first seed base; default: the clock), --trace
# Prints every seed, and at the end the total sequences and ops; on a mismatch the minimal
# reproducer as a Rust test to paste into tests/conformance/regressions.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=5
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --seed) export LAYERFUSE_FUZZ_SEED=$2; shift 2 ;;
    --ops) export LAYERFUSE_FUZZ_OPS=$2; shift 2 ;;
    --base) export LAYERFUSE_FUZZ_BASE=$2; shift 2 ;;
    --kernel) export LAYERFUSE_FUZZ_IMPL=kernel; shift ;;
    --trace) export LAYERFUSE_FUZZ_TRACE=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
export LAYERFUSE_FUZZ_MINUTES=$minutes
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
exec cargo test --release --test conformance fuzz_long -- --ignored --nocapture --test-threads 1
