#!/usr/bin/env bash
# scripts/install.sh and `mount -t fuse.layerfuse layerfuse MNT -o lowerdir=…` through mount(8)
# and mount.fuse3. The layout is checked in a staging DESTDIR; the system-wide install (needed by
# mount(8), which runs helpers with its own PATH) happens only under CI=true or with
# LAYERFUSE_TEST_INSTALL=1, so a developer's /usr/local is not overwritten by a test.
source "$(dirname "$0")/lib.sh"
require_root_fuse
ensure_cmd mount.fuse3 fuse3
REPO=$(cd "$(dirname "$0")/../.." && pwd)

out=$(DESTDIR=$RT_DIR/stage run_logged "$REPO/scripts/install.sh" --bin "$LF_BIN") && ok "install.sh (staged)" || bad "install.sh (staged)" "$out"
expect_eq "staged layerfuse is the build" "$("$LF_BIN" --version)" "$("$RT_DIR/stage/usr/local/bin/layerfuse" --version 2>&1)"
expect_eq "fuse-overlayfs names layerfuse" layerfuse "$(readlink "$RT_DIR/stage/usr/local/bin/fuse-overlayfs")"
expect_match "mount.fuse.layerfuse names mount.fuse3" 'mount\.fuse3$' "$(readlink "$RT_DIR/stage/sbin/mount.fuse.layerfuse")"

if [ "${CI:-}" != true ] && [ -z "${LAYERFUSE_TEST_INSTALL:-}" ]; then
  log "note: system-wide install and mount(8) not checked (set LAYERFUSE_TEST_INSTALL=1 or CI=true)"
  exit 0
fi
# Undo the system-wide install afterwards where nothing was there before (the machine is shared:
# a /usr/local/bin/fuse-overlayfs would shadow Debian's fuse-overlayfs for everyone).
for f in /usr/local/bin/layerfuse /usr/local/bin/fuse-overlayfs /sbin/mount.fuse.layerfuse; do
  [ -e "$f" ] || [ -L "$f" ] || RT_CLEANUPS+=("rm -f $f")
done
out=$(run_logged "$REPO/scripts/install.sh" --bin "$LF_BIN") && ok "install.sh (system)" || bad "install.sh (system)" "$out"
expect_eq "fuse-overlayfs on PATH is layerfuse" "$("$LF_BIN" --version)" "$(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin fuse-overlayfs --version 2>&1)"

mkdir -p "$RT_DIR"/{l1,l2,u,w,m}
echo base >"$RT_DIR/l2/f"
echo top >"$RT_DIR/l1/g"
: >"$RT_DIR/l1/.wh.f"
out=$(run_logged mount -t fuse.layerfuse layerfuse "$RT_DIR/m" \
  -o "lowerdir=$RT_DIR/l1:$RT_DIR/l2,upperdir=$RT_DIR/u,workdir=$RT_DIR/w") &&
  ok "mount -t fuse.layerfuse" || bad "mount -t fuse.layerfuse" "$out"
expect_eq "merged view (whiteout honoured)" "g" "$(ls "$RT_DIR/m" 2>&1)"
echo new >"$RT_DIR/m/n" 2>/dev/null
expect_eq "write lands in the upper" new "$(cat "$RT_DIR/u/n" 2>&1)"
expect_match "listed in /proc/mounts as a FUSE mount" ' fuse' "$(awk -v m="$RT_DIR/m" '$2 == m' /proc/mounts)"
pid=$(pids_mentioning "$RT_DIR/m" | head -1)
out=$(run_logged umount "$RT_DIR/m") && ok "umount" || bad umount "$out"
if [ -n "$pid" ]; then
  poll 20 sh -c "! kill -0 $pid" && ok "daemon exits after umount" || bad "daemon exits after umount" "pid $pid alive"
fi
# Read-only: no upperdir, through mount(8) with -o ro.
out=$(run_logged mount -t fuse.layerfuse layerfuse "$RT_DIR/m" -o "ro,lowerdir=$RT_DIR/l1:$RT_DIR/l2") &&
  ok "read-only mount -t fuse.layerfuse" || bad "read-only mount -t fuse.layerfuse" "$out"
expect_match "read-only mount refuses writes" 'Read-only' "$(sh -c "echo x > '$RT_DIR/m/x'" 2>&1)"
umount "$RT_DIR/m" 2>/dev/null
