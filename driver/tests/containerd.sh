#!/usr/bin/env bash
# containerd 1.6 with layerfuse as its snapshotter: `layerfuse-driver containerd` serves the
# Snapshots gRPC service as a proxy plugin; containerd unpacks images into it, runs containers on
# the fuse3.layerfuse mounts it returns (mount.fuse3 → layerfuse, a logging wrapper first on
# PATH), and removes its snapshots in GC. Run by driver/tests/containerd.rs with LAYERFUSE_BIN
# and LAYERFUSE_DRIVER_BIN; helpers and the exit-code contract from scripts/runtime/lib.sh.
source "$(dirname "$0")/../../scripts/runtime/lib.sh"

require_root_fuse
ensure_cmd containerd containerd
ensure_cmd ctr containerd
ensure_cmd runc runc
ensure_cmd mount.fuse3 fuse3
DRV=${LAYERFUSE_DRIVER_BIN:-}
[ -x "$DRV" ] || { echo "LAYERFUSE_DRIVER_BIN must name layerfuse-driver" >&2; exit 2; }
make_wrapper layerfuse
export PATH="$RT_DIR/bin:$PATH"
D=$RT_DIR
LF_ROOT=$D/lf
SNAP_SOCK=$D/snap.sock
SOCK=$D/containerd.sock
LAYERS=$LF_ROOT/store/layers
log "$(containerd --version), $(runc --version | head -1), $("$LF_BIN" --version)"

# start_snapshotter: the socket appears (renamed into place) only once it listens.
start_snapshotter() {
  "$DRV" containerd --root "$LF_ROOT" --socket "$SNAP_SOCK" >>"$D/snapshotter.log" 2>&1 &
  SNAP_PID=$!
  RT_PIDS+=("$SNAP_PID")
  poll 30 test -S "$SNAP_SOCK"
}
start_snapshotter && ok "snapshotter listening on its socket" || { bad "snapshotter started" "$(tail -5 "$D/snapshotter.log")"; exit 1; }
expect_eq "socket is 0600 root" "600 0" "$(stat -c '%a %u' "$SNAP_SOCK")"

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
[proxy_plugins.layerfuse]
  type = "snapshot"
  address = "$SNAP_SOCK"
# Collect removed images' snapshots at once.
[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1
  schedule_delay = "0s"
EOF
containerd --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
RT_PIDS+=($!)
CTR=(ctr --address "$SOCK" --namespace layerfuse)
SN=("${CTR[@]}" snapshots --snapshotter layerfuse)
if ! poll 60 "${CTR[@]}" version; then
  bad "containerd started" "$(tail -20 "$D/containerd.log")"
  exit 1
fi
ok "containerd answers"
expect_match "containerd sees the layerfuse snapshotter" 'layerfuse +- +ok' \
  "$(run_logged "${CTR[@]}" plugins ls id==layerfuse)"

# --- A three-layer OCI image: base rootfs; a layer that adds a file, deletes /etc/deleteme
# (.wh.) and makes /opt/app opaque (.wh..wh..opq); a layer that overrides a file of layer 2.
make_rootfs_tar "$D/base.tar"
mkdir -p "$D/l2/etc" "$D/l2/opt/app" "$D/l3"
echo layer2 >"$D/l2/from-layer2"
echo layer2 >"$D/l2/overridden"
: >"$D/l2/etc/.wh.deleteme"
: >"$D/l2/opt/app/.wh..wh..opq"
echo c >"$D/l2/opt/app/c"
echo layer3 >"$D/l3/overridden"
tar -C "$D/l2" --numeric-owner --owner=0 --group=0 -cf "$D/l2.tar" .
tar -C "$D/l3" --numeric-owner --owner=0 --group=0 -cf "$D/l3.tar" .
oci=$D/oci
mkdir -p "$oci/blobs/sha256"
blob() { # blob FILE -> "sha256:HEX SIZE", the blob stored
  local h
  h=$(sha256sum "$1" | cut -d' ' -f1)
  cp "$1" "$oci/blobs/sha256/$h"
  echo "sha256:$h $(stat -c %s "$1")"
}
read -r L1 S1 < <(blob "$D/base.tar")
read -r L2 S2 < <(blob "$D/l2.tar")
read -r L3 S3 < <(blob "$D/l3.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["%s","%s","%s"]}}' \
  "$L1" "$L2" "$L3" >"$D/config.json"
read -r C SC < <(blob "$D/config.json")
LT=application/vnd.oci.image.layer.v1.tar
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"%s","digest":"%s","size":%s},{"mediaType":"%s","digest":"%s","size":%s},{"mediaType":"%s","digest":"%s","size":%s}]}' \
  "$C" "$SC" "$LT" "$L1" "$S1" "$LT" "$L2" "$S2" "$LT" "$L3" "$S3" >"$D/manifest.json"
read -r M SM < <(blob "$D/manifest.json")
IMG=localhost/lfbox:1
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"1"}}]}' \
  "$M" "$SM" "$IMG" >"$oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$oci/oci-layout"
tar -C "$oci" -cf "$D/image.tar" .

out=$(run_logged "${CTR[@]}" images import --snapshotter layerfuse "$D/image.tar") &&
  ok "ctr images import --snapshotter layerfuse" || bad "import" "$out"
CHAIN=sha256:$(printf '%s %s' "$L1" "$L2" | sha256sum | cut -d' ' -f1)
CHAIN=sha256:$(printf '%s %s' "$CHAIN" "$L3" | sha256sum | cut -d' ' -f1)
out=$(run_logged "${SN[@]}" info "$CHAIN")
expect_match "the image's top snapshot is committed" '"Kind": "Committed"' "$out"
expect_eq "three committed layers" 3 "$("${SN[@]}" ls | grep -c Committed)"

# run NAME [--rm] -- CMD...: a container of the image on the layerfuse snapshotter.
run() {
  local name=$1 flags=()
  shift
  while [ "$1" != -- ]; do flags+=("$1"); shift; done
  shift
  run_logged "${CTR[@]}" run "${flags[@]}" --snapshotter layerfuse "$IMG" "$name" "$@"
}
out=$(run r1 --rm -- sh -c 'cat /input.txt /from-layer2 /overridden; ls /etc/deleteme 2>&1 || echo gone; ls /opt/app; echo w > /written; cat /written; grep " / " /proc/mounts')
expect_match "image content" 'original' "$out"
expect_match "layer 2's file" '^layer2$' "$out"
expect_match "upper layer wins (layer 3 over 2)" '^layer3$' "$out"
expect_match ".wh. whiteout hides the file" 'gone' "$out"
expect_eq "opaque dir hides the base's entries" "c" "$(printf '%s\n' "$out" | sed -n '/^gone$/{n;p}')"
expect_match "the container writes" '^w$' "$out"
expect_match "its root is a layerfuse FUSE mount" ' / fuse' "$out"
grep -q 'lowerdir=' "$ARGV_LOG" && ok "mount.fuse3 ran layerfuse with lowerdir=" || bad "layerfuse ran" "argv log empty"

# --- The seed behaviours: independent writable layers, copy-on-write, layers shared.
out=$(run c1 -- sh -c 'cat /same 2>/dev/null || echo none; echo one > /same; echo changed > /input.txt')
expect_eq "container 1 starts clean" none "$out"
out=$(run c2 -- sh -c 'cat /same 2>/dev/null || echo none; cat /input.txt; echo two > /same')
expect_eq "container 2 sees neither container 1's file nor its change" "none original" "$(echo $out)"
out=$(run_logged "${CTR[@]}" task start c1)
expect_eq "a stopped container keeps its writable layer" one "$out"
out=$(run_logged "${CTR[@]}" task start c2)
expect_eq "container 2 keeps its own write" "two original" "$(echo $out)"
out=$(run c3 --rm -- cat /input.txt)
expect_eq "copy-on-write: the image keeps the original" original "$out"
p1=$("${SN[@]}" info c1 | sed -n 's/.*"Parent": "\(.*\)".*/\1/p')
p2=$("${SN[@]}" info c2 | sed -n 's/.*"Parent": "\(.*\)".*/\1/p')
expect_eq "both containers' layers sit on the same image layers" "$CHAIN $CHAIN" "$p1 $p2"

# --- A container's changes committed, and the committed snapshot viewed read-only.
out=$(run_logged "${SN[@]}" commit c1-layer c1) && ok "commit container 1's snapshot" || bad "commit c1" "$out"
run_logged "${SN[@]}" view c1-view c1-layer >/dev/null
mline=$("${SN[@]}" mounts "$D/view" c1-view)
expect_match "view of 4 layers is a fuse3.layerfuse union" '^mount -t fuse3.layerfuse layerfuse ' "$mline"
mkdir -p "$D/view"
opts=${mline##* -o }
# As containerd's mount package does for fuse3.* types.
out=$(run_logged mount.fuse3 layerfuse "$D/view" -o "$opts" -t layerfuse) && ok "view mounted" || bad "view mount" "$out"
expect_eq "view shows the container's files" "one changed" "$(cat "$D/view/same" "$D/view/input.txt" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
expect_match "view is read-only" 'Read-only' "$(touch "$D/view/x" 2>&1)"
umount "$D/view" && ok "view unmounted" || bad "view unmount" busy
run_logged "${SN[@]}" rm c1-view >/dev/null

# --- ctr snapshots prepare/commit/view/usage/ls/rm and error codes.
run_logged "${SN[@]}" prepare s-a >/dev/null && ok "prepare without parent" || bad "prepare" ""
src=$("${SN[@]}" mounts /x s-a | sed -n 's/^mount -t bind \([^ ]*\) .*/\1/p')
expect_match "a first layer is a writable bind" '^/' "$src"
head -c 300000 /dev/urandom >"$src/blob"
run_logged "${SN[@]}" commit s-l s-a >/dev/null && ok "commit" || bad "commit s-a" ""
usage=$(run_logged "${SN[@]}" usage s-l)
# The layer's root, the file, and the store's record of its deduplicated file (.wh..wh..lfmeta).
expect_match "usage of the committed layer" 's-l +(29[0-9]|30[0-9])\.[0-9]+ KiB +3 *$' "$usage"
run_logged "${SN[@]}" view s-v s-l >/dev/null
expect_match "view of one layer is a read-only union" '^mount -t fuse3.layerfuse layerfuse /x -o lowerdir=[^,]*$' "$("${SN[@]}" mounts /x s-v)"
ls=$(run_logged "${SN[@]}" ls)
expect_match "ls: the view" 's-v +s-l +View' "$ls"
expect_match "ls: the layer" 's-l +Committed' "$ls"
expect_match "rm of a parent is refused (FailedPrecondition)" 'failed precondition' "$(run_logged "${SN[@]}" rm s-l)"
expect_match "prepare of an existing key: AlreadyExists" 'already exists' "$(run_logged "${SN[@]}" prepare s-v)"
expect_match "info of a missing key: NotFound" 'not found' "$(run_logged "${SN[@]}" info nosuch)"
run_logged "${SN[@]}" rm s-v s-l >/dev/null && ok "rm view and layer" || bad "rm" ""

# containerd's gRPC client redials a lost snapshotter with a backoff (1 s, growing): wait for it.
reconnected() { poll 60 "${SN[@]}" ls; }

# --- Restarts of the snapshotter (SIGTERM, then kill -9) between ctr runs: nothing lost.
before=$("${SN[@]}" ls)
stop_pid "$SNAP_PID"
start_snapshotter && reconnected && ok "snapshotter restarted" || bad "restart" "$(tail -3 "$D/snapshotter.log")"
expect_eq "same snapshots after a restart" "$before" "$("${SN[@]}" ls)"
expect_eq "container 2's layer survives" "two original" "$(echo $(run_logged "${CTR[@]}" task start c2))"
kill -KILL "$SNAP_PID"
wait "$SNAP_PID" 2>/dev/null
rm -f "$SNAP_SOCK" # a stale socket: the snapshotter replaces it, but then `test -S` cannot tell
start_snapshotter && reconnected && ok "snapshotter restarted after kill -9" || bad "restart after kill" ""
expect_eq "same snapshots after kill -9" "$before" "$("${SN[@]}" ls)"
expect_eq "a new container runs" original "$(run r4 --rm -- cat /input.txt)"

# --- Image removal: containerd's GC removes the snapshots; nothing stays on disk.
for c in c1 c2; do run_logged "${CTR[@]}" containers rm "$c" >/dev/null; done
run_logged "${SN[@]}" rm c1-layer >/dev/null
run_logged "${CTR[@]}" images rm --sync "$IMG" >/dev/null && ok "image removed" || bad "images rm" ""
run_logged "${CTR[@]}" content prune references >/dev/null
poll 30 sh -c "[ -z \"\$(${SN[*]} ls | tail -n +2)\" ]" && ok "no snapshot left" ||
  bad "no snapshot left" "$("${SN[@]}" ls)"
poll 30 sh -c "[ -z \"\$(ls -A $LAYERS)\" ]" && ok "no store layer left" ||
  bad "no store layer left" "$(ls -A "$LAYERS")"
poll 30 sh -c "[ -z \"\$(find $LF_ROOT/store/objects -type f)\" ]" && ok "no store bytes left" ||
  bad "no store bytes left" "$(find "$LF_ROOT/store/objects" -type f | head -3)"
left=$(awk -v p="$D/" 'index($2, p) == 1' /proc/mounts | wc -l)
expect_eq "no mount left" 0 "$left"
