#!/usr/bin/env bash
# Rootless: layerfuse run by an unprivileged user (nobody) inside a user namespace
# (`unshare -Urm`), then rootless Podman (as nobody, single-uid mapping: no subuid ranges) with
# mount_program = layerfuse. /dev/fuse is made 0666 for the test and restored after.
# Known gaps are xfail checks (see lib.sh): they log, and fail only once they start working.
source "$(dirname "$0")/lib.sh"
require_root_fuse
ensure_cmd unshare util-linux
ensure_cmd setpriv util-linux
ensure_cmd podman podman crun conmon catatonit
ensure_cmd runc runc
ensure_cmd newuidmap uidmap

U=65534
old_mode=$(stat -c %a /dev/fuse)
RT_CLEANUPS+=("chmod $old_mode /dev/fuse")
chmod 0666 /dev/fuse
cp "$LF_BIN" "$RT_DIR/bin/layerfuse.real"
LF_BIN=$RT_DIR/bin/layerfuse.real # readable by nobody wherever the build lives
make_wrapper layerfuse
chmod 0666 "$ARGV_LOG"
# Run from / : the checkout may sit in a directory the unprivileged user cannot enter (a
# mktemp -d clone is 0700), and podman fails to start its process there.
as_user() { (cd / && setpriv --reuid=$U --regid=$U --clear-groups env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  HOME="$RT_DIR/home" XDG_RUNTIME_DIR="$RT_DIR/xdg" "$@"); }
userns() { as_user unshare -Urm sh -c "$1"; }

# --- layerfuse in an unprivileged user namespace ------------------------------------------
mk_layers() { # mk_layers DIR
  mkdir -p "$1"/{l/d,l/e,u,w,m}
  echo base >"$1/l/f"
  echo del >"$1/l/del"
  echo x >"$1/l/d/x"
  echo y >"$1/l/e/y"
}
mk_layers "$RT_DIR/a"
mk_layers "$RT_DIR/b"
mkdir -p "$RT_DIR/home" "$RT_DIR/xdg"
chmod 0700 "$RT_DIR/xdg"
chown -R $U:$U "$RT_DIR/a" "$RT_DIR/b" "$RT_DIR/home" "$RT_DIR/xdg"

# step NAME CMD: run inside the userns with the union mounted, print "NAME=rc".
script='cd "$0"; '"$RT_DIR"'/bin/layerfuse -o lowerdir=l,upperdir=u,workdir=w$1 m || { echo mount=fail; exit 0; }
echo mount=0
cat m/f >/dev/null; echo read=$?
echo mod >>m/f; echo copyup_file=$?
echo n >m/newfile; echo create=$?
rm m/del; echo whiteout=$?
mkdir m/newdir; echo mkdir=$?
mkdir m/d/sub; echo copyup_dir=$?
rm -rf m/e && mkdir m/e; echo opaque=$?
mv m/d m/d2; echo rename_dir=$?
umount m; echo umount=$?'
for mode in plain userxattr; do
  dir=$RT_DIR/a opt=""
  [ $mode = userxattr ] && dir=$RT_DIR/b opt=",userxattr"
  out=$(as_user unshare -Urm sh -c "$script" "$dir" "$opt" 2>&1)
  printf '  [%s] %s\n' "$mode" "$(echo $out)" >&2
  r() { printf '%s\n' "$out" | sed -n "s/^$1=//p"; }
  expect_eq "[$mode] mount in a user namespace" 0 "$(r mount)"
  expect_eq "[$mode] read" 0 "$(r read)"
  expect_eq "[$mode] copy-up of a file" 0 "$(r copyup_file)"
  expect_eq "[$mode] create" 0 "$(r create)"
  expect_eq "[$mode] delete a lower file (0/0 whiteout: mknod is allowed in a userns)" 0 "$(r whiteout)"
  expect_eq "[$mode] umount" 0 "$(r umount)"
  for k in mkdir copyup_dir opaque rename_dir; do expect_eq "[$mode] $k" 0 "$(r $k)"; done
  # Without CAP_SYS_ADMIN layerfuse writes the kernel's userxattr markers by itself.
  expect_eq "[$mode] markers are user.overlay.*" y \
    "$(getfattr --absolute-names --only-values -n user.overlay.opaque "$dir/u/e" 2>&1)"
done

# --- rootless Podman ---------------------------------------------------------------------
make_rootfs_tar "$RT_DIR/rootfs.tar"
chown $U "$RT_DIR/rootfs.tar"
cat >"$RT_DIR/storage.conf" <<EOC
[storage]
driver = "overlay"
[storage.options.overlay]
mount_program = "$RT_DIR/bin/layerfuse"
EOC
PP=(podman --cgroup-manager cgroupfs --events-backend file --runtime runc)
prun() { as_user env CONTAINERS_STORAGE_CONF="$RT_DIR/storage.conf" CONTAINERS_CONF=/dev/null \
  LF_EXTRA="${LF_EXTRA:-}" "${PP[@]}" "$@"; }
RT_CLEANUPS=("as_user env CONTAINERS_STORAGE_CONF=$RT_DIR/storage.conf ${PP[*]} rm -af -t 0" \
  "as_user env CONTAINERS_STORAGE_CONF=$RT_DIR/storage.conf ${PP[*]} system reset -f" \
  "p=\$(cat $RT_DIR/xdg/libpod/tmp/pause.pid 2>/dev/null) && [ -n \"\$p\" ] && stop_pid \$p" "${RT_CLEANUPS[@]}")
out=$(run_logged prun import "$RT_DIR/rootfs.tar" localhost/lfbox:1) && ok "rootless podman import" || bad "rootless podman import" "$out"
RUNR=(run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 localhost/lfbox:1)
out=$(run_logged prun "${RUNR[@]}" cat /input.txt)
expect_eq "rootless podman run" original "$out"
out=$(run_logged prun "${RUNR[@]}" sh -c 'echo new > /input.txt && cat /input.txt && rm /etc/deleteme && mkdir /newdir && echo ok')
expect_eq "rootless podman: write, delete, mkdir in a container" ok "$(printf '%s' "$out" | tail -1)"
# An explicit -o userxattr (what a runtime may send) works the same:
sed -i 's|^exec \(.*\)"\$@"$|exec \1"$@" ${LF_EXTRA:-}|' "$RT_DIR/bin/layerfuse"
out=$(LF_EXTRA="-o userxattr" run_logged prun "${RUNR[@]}" sh -c 'echo new > /input.txt && cat /input.txt && rm /etc/deleteme && mkdir /newdir && echo ok')
expect_eq "rootless podman with -o userxattr: write, delete, mkdir" ok "$(printf '%s' "$out" | tail -1)"
grep -q 'uidmapping\|gidmapping' "$ARGV_LOG" && log "note: rootless podman sent uid/gid mappings" || true
