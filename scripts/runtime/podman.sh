#!/usr/bin/env bash
# Podman (root) with containers/storage's overlay driver and mount_program = layerfuse.
# import, run, diff, commit, run from the commit, save/load of an image whose top layer deletes a
# file (a `.wh.` whiteout in a lower, as containers/storage writes them with a mount program), and
# the behaviours users know (isolation, copy-on-write, rm, volumes, bind mounts, ro binds).
source "$(dirname "$0")/lib.sh"

require_root_fuse
ensure_cmd podman podman crun conmon catatonit
ensure_cmd runc runc

make_wrapper layerfuse
cat >"$RT_DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$RT_DIR/graph"
runroot = "$RT_DIR/run"
[storage.options.overlay]
mount_program = "$RT_DIR/bin/layerfuse"
EOF
cat >"$RT_DIR/containers.conf" <<EOF
[containers]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$RT_DIR/events.log"
tmp_dir = "$RT_DIR/tmp"
volume_path = "$RT_DIR/volumes"
EOF
export CONTAINERS_STORAGE_CONF=$RT_DIR/storage.conf
export CONTAINERS_CONF=$RT_DIR/containers.conf
# Never let a user/system registries.conf or policy send podman to the network.
export REGISTRIES_CONFIG_PATH=/dev/null

P=(podman --root "$RT_DIR/graph" --runroot "$RT_DIR/run" --storage-driver overlay
  --storage-opt "overlay.mount_program=$RT_DIR/bin/layerfuse"
  --cgroup-manager cgroupfs --events-backend file --tmpdir "$RT_DIR/tmp" --runtime runc)
RUN=(run --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
IMG=localhost/lfbox:1
# On exit: remove every container (so their mounts go) and the storage, before lib.sh's sweep.
RT_CLEANUPS+=("timeout 60 ${P[*]} rm -af -t 0" "timeout 60 ${P[*]} system reset -f")

log "$(podman --version), $(runc --version | head -1), $("$LF_BIN" --version)"
make_rootfs_tar "$RT_DIR/rootfs.tar"
out=$(run_logged "${P[@]}" import "$RT_DIR/rootfs.tar" "$IMG") && ok import || bad import "$out"

# The mount program is layerfuse, and it is the container's root filesystem.
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm "$IMG" sh -c 'awk '\''$2=="/"{print $1, $3}'\'' /proc/mounts; cat /input.txt')
expect_match "rootfs is a FUSE mount" '^[^ ]+ fuse' "$out"
expect_match "image content readable" 'original' "$out"
grep -q 'lowerdir=' "$ARGV_LOG" && ok "podman ran the mount program" || bad "podman ran the mount program" "argv log empty"

# Two containers write the same path and see different content.
"${P[@]}" "${RUN[@]}" --name w1 "$IMG" sh -c 'echo one > /same' >/dev/null 2>&1
"${P[@]}" "${RUN[@]}" --name w2 "$IMG" sh -c 'echo two > /same' >/dev/null 2>&1
rm -f "$RT_DIR/w1" "$RT_DIR/w2"
"${P[@]}" cp w1:/same "$RT_DIR/w1" >/dev/null 2>&1
"${P[@]}" cp w2:/same "$RT_DIR/w2" >/dev/null 2>&1
expect_eq "container 1 keeps its write (read from a stopped container)" one "$(cat "$RT_DIR/w1" 2>&1)"
expect_eq "container 2 keeps its own write" two "$(cat "$RT_DIR/w2" 2>&1)"

# Copy-on-write: f1 changes an image file and sees it; a new f2 sees the original.
out=$(run_logged "${P[@]}" "${RUN[@]}" --name f1 "$IMG" sh -c 'echo changed > /input.txt; cat /input.txt')
expect_eq "changed image file seen by its container" changed "$out"
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm "$IMG" cat /input.txt)
expect_eq "new container sees the original image file" original "$out"
out=$(run_logged "${P[@]}" start -a f1)
expect_eq "restarted container still sees its change" changed "$(printf '%s' "$out" | tail -1)"

# Removing a container discards its writes.
"${P[@]}" rm w1 >/dev/null 2>&1
if "${P[@]}" cp w1:/same "$RT_DIR/w1b" >/dev/null 2>&1; then bad "rm discards writes" "w1 still there"; else ok "rm discards the container"; fi
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm "$IMG" sh -c 'cat /same 2>&1 || echo absent')
expect_match "image never saw a container's write" 'absent|No such file' "$out"

# diff: A / C / D.
out=$(run_logged "${P[@]}" "${RUN[@]}" --name d1 "$IMG" sh -c 'echo new > /added; echo mod >> /input.txt; rm /etc/deleteme')
out=$(run_logged "${P[@]}" diff d1)
expect_match "diff lists the added file" '^A /added$' "$out"
expect_match "diff lists the changed file" '^C /input.txt$' "$out"
expect_match "diff lists the deleted file" '^D /etc/deleteme$' "$out"

# commit, and run from the commit.
IMG2=localhost/lfbox:2
out=$(run_logged "${P[@]}" commit -q d1 "$IMG2") && ok commit || bad commit "$out"
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm "$IMG2" sh -c 'cat /added; cat /input.txt; ls /etc/deleteme 2>&1 || echo gone')
expect_match "committed image has the added file" '^new' "$out"
expect_match "committed image has the change" 'original.mod' "$(printf '%s' "$out" | tr '\n' ' ')"
expect_match "committed image lacks the deleted file (.wh. in a lower)" 'gone' "$out"
# The deletion is stored as an OCI whiteout in the committed layer, read by layerfuse as a lower.
if find "$RT_DIR/graph/overlay" -name '.wh.deleteme' | grep -q .; then
  ok "committed layer holds a .wh. whiteout"
else
  log "note: no .wh.deleteme file in the layers (whiteouts stored as $(find "$RT_DIR/graph/overlay" -name deleteme -printf '%y %M' 2>/dev/null | head -1))"
fi

# save / load of that image.
out=$(run_logged "${P[@]}" save -o "$RT_DIR/lfbox2.tar" "$IMG2") && ok save || bad save "$out"
"${P[@]}" rm -f d1 >/dev/null 2>&1
out=$(run_logged "${P[@]}" rmi "$IMG2") && ok "rmi" || bad rmi "$out"
out=$(run_logged "${P[@]}" load -q -i "$RT_DIR/lfbox2.tar") && ok load || bad load "$out"
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm "$IMG2" sh -c 'cat /added; ls /etc/deleteme 2>&1 || echo gone; ls /etc')
expect_match "loaded image has the added file" '^new' "$out"
expect_match "loaded image lacks the deleted file" 'gone' "$out"
expect_nomatch "no whiteout marker visible in the container" '\.wh\.' "$out"

# A named volume keeps data across container replacement.
"${P[@]}" volume create v1 >/dev/null 2>&1
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm -v v1:/data "$IMG" sh -c 'echo kept > /data/state')
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm -v v1:/data "$IMG" cat /data/state)
expect_eq "volume survives container replacement" kept "$out"

# A bind mount is seen both ways; a read-only one refuses writes.
mkdir -p "$RT_DIR/host"
echo from-host >"$RT_DIR/host/h"
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm -v "$RT_DIR/host:/b" "$IMG" sh -c 'cat /b/h; echo from-container > /b/c')
expect_eq "bind mount: container sees host file" from-host "$out"
expect_eq "bind mount: host sees container file" from-container "$(cat "$RT_DIR/host/c" 2>&1)"
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm -v "$RT_DIR/host:/b:ro" "$IMG" sh -c 'echo x > /b/ro 2>&1; echo rc=$?')
expect_match "read-only bind refuses writes" 'Read-only file system' "$out"
[ -e "$RT_DIR/host/ro" ] && bad "read-only bind left no file" "host/ro exists" || ok "read-only bind left no file"

# Deleting a directory from the image and re-creating it (opaque dir) inside a container.
out=$(run_logged "${P[@]}" "${RUN[@]}" --rm "$IMG" sh -c 'rm -rf /opt/app && mkdir /opt/app && echo x > /opt/app/only && ls /opt/app')
expect_eq "replaced directory is opaque" only "$out"

# No mount left behind by the runs above once their containers are gone.
"${P[@]}" rm -af -t 0 >/dev/null 2>&1
left=$(awk -v p="$RT_DIR/graph" 'index($2, p) == 1' /proc/mounts | grep -c fuse)
expect_eq "no layerfuse mount left after rm" 0 "$left"
