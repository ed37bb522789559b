# Shared helpers of the runtime tests (scripts/runtime/*.sh). Sourced, not run.
#
# Contract with tests/runtimes.rs: a script exits 0 when every check passed, 77 when a
# prerequisite is missing (root, /dev/fuse, a runtime that cannot be installed), anything else
# on failure. Each script works in a private dir under /tmp/lft/ (which .ci/run also sweeps),
# starts its daemons itself and stops them by PID on exit, even on failure.
#
# LAYERFUSE_BIN: the layerfuse binary under test (tests/runtimes.rs passes cargo's build).

set -uo pipefail

LF_BIN=${LAYERFUSE_BIN:-}
if [ -z "$LF_BIN" ] || [ ! -x "$LF_BIN" ]; then
  echo "LAYERFUSE_BIN must name the layerfuse binary (got '${LF_BIN}')" >&2
  exit 2
fi

RT_NAME=$(basename "$0" .sh)
RT_PASS=0
RT_FAIL=0
RT_FAILED=()
RT_PIDS=()        # daemons this script started, stopped in reverse order on exit
RT_CLEANUPS=()    # extra cleanup commands, run first

log() { printf '[%s %(%T)T] %s\n' "$RT_NAME" -1 "$*"; }

skip() {
  log "SKIP: $*"
  exit 77
}

# ok NAME -- the check passed; bad NAME DETAIL -- it failed (the script goes on).
ok() {
  RT_PASS=$((RT_PASS + 1))
  log "ok   $1"
}
bad() {
  RT_FAIL=$((RT_FAIL + 1))
  RT_FAILED+=("$1")
  log "FAIL $1: ${2:-}"
}

# xfail NAME COND-RESULT DETAIL: a known gap of layerfuse (reported to the lead). COND-RESULT 0
# means the behaviour now works: that is an XPASS and fails the run, so the mark gets removed.
xfail() {
  if [ "$2" = 0 ]; then
    bad "$1" "XPASS: works now; turn this xfail into a plain check"
  else
    log "xfail $1 (known gap: $3)"
  fi
}

# expect_eq NAME EXPECTED ACTUAL
expect_eq() {
  if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "expected '$2', got '$3'"; fi
}
# expect_match NAME REGEX TEXT
expect_match() {
  if printf '%s' "$3" | grep -Eq -- "$2"; then ok "$1"; else bad "$1" "no match for /$2/ in: $3"; fi
}
expect_nomatch() {
  if printf '%s' "$3" | grep -Eq -- "$2"; then bad "$1" "unexpected /$2/ in: $3"; else ok "$1"; fi
}

# run_logged CMD... : run, echo the command and its output into the log, return its status.
run_logged() {
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  printf '  $ %s\n' "$*" >&2
  [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    /' >&2
  printf '%s' "$out"
  return $rc
}

require_root_fuse() {
  [ "$(id -u)" = 0 ] || skip "not running as root"
  [ -c /dev/fuse ] || skip "/dev/fuse missing"
}

# ensure_cmd CMD PACKAGE...: install Debian packages when CMD is missing (the tests install their
# runtime themselves, as CI starts from a bare machine).
ensure_cmd() {
  local cmd=$1
  shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  log "installing $* (for $cmd)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 ||
      skip "cannot install $* for $cmd"
  fi
  command -v "$cmd" >/dev/null 2>&1 || skip "$cmd still missing after installing $*"
}

# poll SECONDS CMD...: run CMD until it succeeds or the deadline passes (returns 1 then).
poll() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    # A short pause between probes of a condition, not a synchronisation by sleeping.
    sleep 0.1
  done
}

# The private work dir.
mkdir -p /tmp/lft
RT_DIR=$(mktemp -d "/tmp/lft/rt-$RT_NAME.XXXXXX")
chmod 0755 "$RT_DIR"
mkdir -p "$RT_DIR/bin"
ARGV_LOG=$RT_DIR/argv.log
: >"$ARGV_LOG"

# make_wrapper NAME: $RT_DIR/bin/NAME logs its argv (one call per line, arguments in [ ]) to
# $ARGV_LOG, then execs layerfuse. This is how the tests learn what each runtime sends.
make_wrapper() {
  cat >"$RT_DIR/bin/$1" <<EOF
#!/bin/sh
{ printf '%s' "\$(basename "\$0") cwd=\$(pwd)"; for a in "\$@"; do printf ' [%s]' "\$a"; done; echo; } >>"$ARGV_LOG"
exec "$LF_BIN" "\$@"
EOF
  chmod 0755 "$RT_DIR/bin/$1"
}

# make_rootfs_tar TAR: a tiny image from busybox-static: /bin/* applets, /etc/passwd, a file to
# overwrite (/input.txt) and one to delete (/etc/deleteme).
make_rootfs_tar() {
  ensure_cmd busybox busybox-static
  local bb r
  bb=$(command -v busybox)
  file -L "$bb" 2>/dev/null | grep -q 'dynamically' && bb=/bin/busybox
  r=$RT_DIR/rootfs
  mkdir -p "$r"/{bin,etc,tmp,data,proc,sys,dev,root,var}
  chmod 1777 "$r/tmp"
  cp "$bb" "$r/bin/busybox"
  local a
  for a in $("$r/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"
  done
  ln -s bin "$r/sbin"
  mkdir -p "$r/usr" && ln -s ../bin "$r/usr/bin"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$r/etc/group"
  echo original >"$r/input.txt"
  echo doomed >"$r/etc/deleteme"
  mkdir -p "$r/opt/app" && echo a >"$r/opt/app/a" && echo b >"$r/opt/app/b"
  tar -C "$r" --numeric-owner --owner=0 --group=0 -cf "$1" .
}

# Every mount under RT_DIR goes, deepest first (lazily if busy).
unmount_all_under() {
  local m
  awk -v p="$1" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

# PIDs of processes whose command line mentions STRING (our private dir): conmon, shims and
# layerfuse daemons that the runtimes started on our behalf.
pids_mentioning() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if { tr "\0" " " <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$1"; then echo "${p#/proc/}"; fi
  done
}

# stop_pid PID: SIGTERM, wait up to 20 s (polling), then SIGKILL.
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  poll 20 sh -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

rt_cleanup() {
  local rc=$?
  set +e
  local c i
  for c in "${RT_CLEANUPS[@]}"; do eval "$c" >/dev/null 2>&1; done
  for ((i = ${#RT_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${RT_PIDS[$i]}"; done
  unmount_all_under "$RT_DIR"
  for c in $(pids_mentioning "$RT_DIR"); do kill -TERM "$c" 2>/dev/null; done
  for c in $(pids_mentioning "$RT_DIR"); do
    poll 10 sh -c "! kill -0 $c" || kill -KILL "$c" 2>/dev/null
  done
  unmount_all_under "$RT_DIR"
  if [ -s "$ARGV_LOG" ]; then
    log "argv received by the mount program (first of each shape):"
    sed -E 's#[0-9a-f]{64}#<ID>#g; s#/l/[A-Z0-9]{26}#/l/<L>#g' "$ARGV_LOG" | awk '!seen[$0]++' | head -20 | sed 's/^/    /'
  fi
  if [ -z "${RT_KEEP:-}" ]; then
    rm -rf --one-file-system "$RT_DIR" 2>/dev/null || rm -rf "$RT_DIR" 2>/dev/null
  else
    log "kept $RT_DIR"
  fi
  log "summary: $RT_PASS checks ok, $RT_FAIL failed (${SECONDS}s)"
  if [ "$RT_FAIL" -gt 0 ]; then
    log "failed checks: ${RT_FAILED[*]}"
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}
trap rt_cleanup EXIT
trap 'exit 130' INT TERM
