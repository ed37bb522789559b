#!/usr/bin/env bash
# containerd 1.6 with layerfuse mounted as a snapshotter's mount of type `fuse3.layerfuse`.
#
# Route (the most faithful one that needs no extra Go/gRPC code): containerd's own overlayfs
# snapshotter unpacks a two-layer OCI image (the top layer deletes a file with a `.wh.` entry) and
# prepares an active snapshot per container; the mount it returns is re-typed to
# `fuse3.layerfuse`, which is what a proxy snapshotter would return, and mounted exactly as
# containerd's mount package does for `fuse3.*` types (mount/mount_linux.go, mountWithHelper):
#     mount.fuse3 SOURCE TARGET -o OPT1 -o OPT2 ... -t layerfuse
# mount.fuse3 then runs `layerfuse SOURCE TARGET -o OPT1,OPT2,...,dev,suid` through /bin/sh (a
# logging wrapper first on PATH records it). Containers run with `ctr run --rootfs MERGED`
# (containerd → containerd-shim-runc-v2 → runc over the layerfuse mount); snapshots are committed
# and diffed with containerd's own commands, which read the upper layerfuse wrote.
source "$(dirname "$0")/lib.sh"

require_root_fuse
ensure_cmd containerd containerd
ensure_cmd ctr containerd
ensure_cmd runc runc
ensure_cmd mount.fuse3 fuse3
make_wrapper layerfuse
export PATH="$RT_DIR/bin:$PATH"
D=$RT_DIR
SOCK=$D/containerd.sock
log "$(containerd --version), $(runc --version | head -1), mount.fuse3 $(mount.fuse3 -V 2>&1 | head -1), $("$LF_BIN" --version)"

cat >"$D/config.toml" <<EOF
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = "$SOCK.debug"
[metrics]
  address = ""
# Collect removed snapshots at once (the overlayfs snapshotter deletes their dirs in GC).
[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1
  schedule_delay = "0s"
EOF
containerd --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
RT_PIDS+=($!)
CTR=(ctr --address "$SOCK" --namespace layerfuse)
if ! poll 60 "${CTR[@]}" version; then
  tail -20 "$D/containerd.log" | sed 's/^/    containerd: /'
  bad "containerd started" "no answer on $SOCK within 60 s"
  exit 1
fi
ok "containerd answers ($SECONDS s)"

# --- A two-layer OCI image archive, built by hand: base rootfs, then a layer that adds a file,
# deletes /etc/deleteme (.wh.) and makes /opt/app opaque (.wh..wh..opq).
make_rootfs_tar "$D/base.tar"
mkdir -p "$D/l2/etc" "$D/l2/opt/app"
echo layer2 >"$D/l2/from-layer2"
: >"$D/l2/etc/.wh.deleteme"
: >"$D/l2/opt/app/.wh..wh..opq"
echo c >"$D/l2/opt/app/c"
tar -C "$D/l2" --numeric-owner --owner=0 --group=0 -cf "$D/top.tar" .
oci=$D/oci
mkdir -p "$oci/blobs/sha256"
blob() { # blob FILE -> prints "sha256:HEX SIZE", stores the blob
  local h s
  h=$(sha256sum "$1" | cut -d' ' -f1)
  s=$(stat -c %s "$1")
  cp "$1" "$oci/blobs/sha256/$h"
  echo "sha256:$h $s"
}
read -r L1 S1 < <(blob "$D/base.tar")
read -r L2 S2 < <(blob "$D/top.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' \
  "$L1" "$L2" >"$D/config.json"
read -r C SC < <(blob "$D/config.json")
LT=application/vnd.oci.image.layer.v1.tar
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"%s","digest":"%s","size":%s},{"mediaType":"%s","digest":"%s","size":%s}]}' \
  "$C" "$SC" "$LT" "$L1" "$S1" "$LT" "$L2" "$S2" >"$D/manifest.json"
read -r M SM < <(blob "$D/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"io.containerd.image.name":"localhost/lfbox:1","org.opencontainers.image.ref.name":"1"}}]}' \
  "$M" "$SM" >"$oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$oci/oci-layout"
tar -C "$oci" -cf "$D/image.tar" .
out=$(run_logged "${CTR[@]}" images import --snapshotter overlayfs "$D/image.tar") && ok "ctr images import (unpacked by the overlayfs snapshotter)" || bad import "$out"
# The image's top snapshot is named by its chain id.
CHAIN=sha256:$(printf '%s %s' "$L1" "$L2" | sha256sum | cut -d' ' -f1)
out=$(run_logged "${CTR[@]}" snapshots --snapshotter overlayfs info "$CHAIN") && ok "image snapshot $CHAIN exists" || bad "image snapshot exists" "$out"

# mount_snapshot KEY PARENT: prepare an active snapshot, take the mount containerd returns,
# re-type it fuse3.layerfuse and mount it as containerd's mount package does. Prints MERGED.
mount_snapshot() {
  local key=$1 parent=$2 line opts target args=() o
  "${CTR[@]}" snapshots --snapshotter overlayfs prepare "$key" "$parent" >/dev/null || return 1
  # "mount -t overlay overlay /tmp/mnt -o index=off,workdir=…,upperdir=…,lowerdir=…"
  line=$("${CTR[@]}" snapshots --snapshotter overlayfs mounts /tmp/mnt "$key") || return 1
  opts=${line##* -o }
  target=$D/merged/$key
  mkdir -p "$target"
  IFS=, read -r -a o <<<"$opts"
  for x in "${o[@]}"; do args+=(-o "$x"); done
  printf '  $ mount.fuse3 overlay %s %s -t layerfuse\n' "$target" "${args[*]}" >&2
  mount.fuse3 overlay "$target" "${args[@]}" -t layerfuse >&2 || return 1
  echo "$target"
}
umount_snapshot() { umount "$D/merged/$1" 2>/dev/null || fusermount3 -u "$D/merged/$1"; }
upper_of() { # the upperdir containerd gave the snapshot KEY
  "${CTR[@]}" snapshots --snapshotter overlayfs mounts /tmp/mnt "$1" | tr ',' '\n' | sed -n 's/^upperdir=//p'
}
# cr ID ROOTFS [ctr run flags] -- CMD...: a container over ROOTFS (no network: ctr gives it a
# fresh netns), removed when it exits. A --rootfs container has no image config: set PATH.
cr() {
  local id=$1 root=$2 flags=()
  shift 2
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do flags+=("$1"); shift; done
  shift
  run_logged "${CTR[@]}" run --rm --env PATH=/bin:/usr/bin "${flags[@]}" --rootfs "$root" "$id" "$@"
}

m1=$(mount_snapshot c1 "$CHAIN") && ok "layerfuse mounted through mount.fuse3 (fuse3.layerfuse)" || bad "mount c1" "$m1"
expect_match "the mount is FUSE" 'fuse' "$(awk -v m="$m1" '$2 == m {print $3}' /proc/mounts)"
grep -q 'overlay.*dev,suid' "$ARGV_LOG" && ok "mount.fuse3 appended dev,suid" || log "note: argv without dev,suid"

out=$(cr c1 "$m1" -- sh -c 'cat /input.txt; cat /from-layer2; ls /etc/deleteme 2>&1 || echo gone; ls /opt/app')
expect_match "image content readable" 'original' "$out"
expect_match "top layer's file visible" 'layer2' "$out"
expect_match ".wh. whiteout in a lower hides the file" 'gone' "$out"
expect_eq "opaque dir in a lower hides the base's entries" c "$(printf '%s\n' "$out" | tail -1)"

# Two containers from one image write the same path and see different content; copy-on-write.
m2=$(mount_snapshot c2 "$CHAIN") || bad "mount c2" "$m2"
cr c1 "$m1" -- sh -c 'echo one > /same; echo changed > /input.txt' >/dev/null
cr c2 "$m2" -- sh -c 'echo two > /same' >/dev/null
expect_eq "container 1 keeps its write (after it exited)" "one" "$(cr c1b "$m1" -- cat /same)"
expect_eq "container 2 keeps its own write" "two" "$(cr c2b "$m2" -- cat /same)"
expect_eq "changed image file seen by its container" changed "$(cr c1c "$m1" -- cat /input.txt)"
expect_eq "another container sees the original" original "$(cr c2c "$m2" -- cat /input.txt)"
u1=$(upper_of c1)
expect_eq "write landed in the snapshot's upperdir" one "$(cat "$u1/same" 2>&1)"

# Remove container 1: unmount, remove its snapshot; its writes are gone; a new one is clean.
umount_snapshot c1 && ok "unmount (daemon exits)" || bad unmount "c1 busy?"
out=$(run_logged "${CTR[@]}" snapshots --snapshotter overlayfs rm c1) && ok "snapshot removed" || bad "snapshot rm" "$out"
poll 30 test ! -e "$u1" && ok "removing the snapshot discards the writes (upper gone after GC)" ||
  bad "removing the snapshot discards the writes" "$u1 still there after 30 s"
m3=$(mount_snapshot c3 "$CHAIN") || bad "mount c3" "$m3"
expect_match "a new container never saw the write" 'absent' "$(cr c3 "$m3" -- sh -c 'cat /same 2>/dev/null || echo absent')"

# Changes in c2: add, change, delete; then containerd's differ reads the upper layerfuse wrote.
cr c2d "$m2" -- sh -c 'echo new > /added; echo mod >> /input.txt; rm /etc/passwd; rm -rf /opt/app; mkdir /opt/app; echo z > /opt/app/z' >/dev/null
u2=$(upper_of c2)
expect_match "deletion is a kernel whiteout (char 0/0) in the upper" '^c 0:0$' "$(stat -c '%A %t:%T' "$u2/etc/passwd" 2>&1 | sed 's/^c.* /c /')"
expect_eq "replaced dir is opaque in the upper (trusted.overlay.opaque=y)" y \
  "$(getfattr --absolute-names --only-values -n trusted.overlay.opaque "$u2/opt/app" 2>&1)"
umount_snapshot c2
out=$("${CTR[@]}" snapshots --snapshotter overlayfs diff c2 2>"$D/diff.err" | tar -tzvf - 2>&1)
printf '%s\n' "$out" | sed 's/^/    diff: /' >&2
expect_match "containerd diff: added file" ' \./added$|  added$| added$' "$out"
expect_match "containerd diff: changed file" 'input\.txt$' "$out"
expect_match "containerd diff: deleted file as .wh." 'etc/\.wh\.passwd$' "$out"
# containerd 1.6's walking differ compares two mounted views, so it emits the lower entries the
# replaced dir hides as single whiteouts rather than an opaque marker: either is right.
expect_match "containerd diff: replaced dir hides the image's entries" 'opt/app/\.wh\.(\.wh\.\.opq|c)$' "$out"

# Commit c2 (a new image layer) and run from it.
out=$(run_logged "${CTR[@]}" snapshots --snapshotter overlayfs commit committed c2) && ok "snapshot commit" || bad "commit" "$out"
m4=$(mount_snapshot c4 committed) || bad "mount c4" "$m4"
out=$(cr c4 "$m4" -- sh -c 'cat /added; cat /input.txt; ls /etc/passwd 2>&1 || echo gone; ls /opt/app')
expect_match "committed layer: added file" '^new' "$out"
expect_match "committed layer: change" 'original.mod' "$(printf '%s' "$out" | tr '\n' ' ')"
expect_match "committed layer: deletion (kernel whiteout in a lower)" 'gone' "$out"
expect_eq "committed layer: opaque dir" z "$(printf '%s\n' "$out" | tail -1)"

# "Volume": a host dir outside the snapshot keeps data across container replacement; bind mounts.
mkdir -p "$D/vol" "$D/host"
echo from-host >"$D/host/h"
cr v1 "$m3" --mount type=bind,src="$D/vol",dst=/data,options=rbind:rw -- sh -c 'echo kept > /data/state' >/dev/null
umount_snapshot c3
"${CTR[@]}" snapshots --snapshotter overlayfs rm c3 >/dev/null
m5=$(mount_snapshot c5 "$CHAIN") || bad "mount c5" "$m5"
expect_eq "volume survives container replacement" kept "$(cr v2 "$m5" --mount type=bind,src="$D/vol",dst=/data,options=rbind:rw -- cat /data/state)"
expect_eq "bind mount: container sees host file" from-host \
  "$(cr b1 "$m5" --mount type=bind,src="$D/host",dst=/b,options=rbind:rw -- sh -c 'cat /b/h; echo from-container > /b/c')"
expect_eq "bind mount: host sees container file" from-container "$(cat "$D/host/c" 2>&1)"
expect_match "read-only bind refuses writes" 'Read-only file system' \
  "$(cr b2 "$m5" --mount type=bind,src="$D/host",dst=/b,options=rbind:ro -- sh -c 'echo x > /b/ro 2>&1')"
[ -e "$D/host/ro" ] && bad "read-only bind left no file" "host/ro exists" || ok "read-only bind left no file"

# mount(8) with a fuse.layerfuse type goes through mount.fuse3 too, but mount(8) runs its helper
# with a PATH of its own: it works only with layerfuse installed in a standard dir
# (scripts/install.sh); tests/runtimes.rs checks that path after installing.
mkdir -p "$D/mnt8"
if ! command -v layerfuse >/dev/null 2>&1 || [ -z "${RT_INSTALLED:-}" ]; then
  log "note: mount -t fuse.layerfuse not checked here (needs scripts/install.sh; see install test)"
elif out=$(run_logged mount -t fuse.layerfuse layerfuse "$D/mnt8" -o "lowerdir=$D/l2:$D/rootfs"); then
  expect_match "mount -t fuse.layerfuse works" 'layer2' "$(cat "$D/mnt8/from-layer2" 2>&1)"
  umount "$D/mnt8"
else
  bad "mount -t fuse.layerfuse works" "$out"
fi

for k in c4 c5; do umount_snapshot "$k" 2>/dev/null; done
left=$(awk -v p="$D/merged" 'index($2, p) == 1' /proc/mounts | wc -l)
expect_eq "no mount left" 0 "$left"
