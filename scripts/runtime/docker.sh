#!/usr/bin/env bash
# dockerd 20.10 with its built-in fuse-overlayfs storage driver, which execs `fuse-overlayfs`
# found on PATH: the test puts a dir holding layerfuse under that name first on dockerd's PATH
# (so Debian's own fuse-overlayfs, if installed, cannot shadow it). import, run, diff, commit,
# save/load, and the behaviours users know.
source "$(dirname "$0")/lib.sh"

require_root_fuse
ensure_cmd dockerd docker.io
ensure_cmd containerd containerd
ensure_cmd runc runc
# Debian's client, not a newer one elsewhere on PATH that may not speak to 20.10.
DOCKER_CLI=/usr/bin/docker
[ -x "$DOCKER_CLI" ] || skip "$DOCKER_CLI missing (docker.io installs it)"

make_wrapper fuse-overlayfs
D=$RT_DIR
mkdir -p "$D/root" "$D/exec"
echo '{}' >"$D/daemon.json"
log "$(dockerd --version), $(containerd --version), $(runc --version | head -1), $("$LF_BIN" --version)"

PATH="$D/bin:$PATH" dockerd --config-file "$D/daemon.json" --data-root "$D/root" --exec-root "$D/exec" \
  -H "unix://$D/docker.sock" --pidfile "$D/dockerd.pid" --iptables=false --ip6tables=false \
  --bridge=none --storage-driver fuse-overlayfs >"$D/dockerd.log" 2>&1 &
RT_PIDS+=($!)
DOCKER=("$DOCKER_CLI" -H "unix://$D/docker.sock")
if ! poll 60 "${DOCKER[@]}" version; then
  tail -30 "$D/dockerd.log" | sed 's/^/    dockerd: /'
  bad "dockerd started" "no answer on $D/docker.sock within 60 s"
  exit 1
fi
ok "dockerd answers ($SECONDS s)"
info=$("${DOCKER[@]}" info --format '{{.Driver}}' 2>&1)
expect_eq "storage driver is fuse-overlayfs" fuse-overlayfs "$info"
RT_CLEANUPS+=("timeout 60 ${DOCKER[*]} rm -f \$(${DOCKER[*]} ps -aq)")

RUN=(run --network none)
IMG=lfbox:1
make_rootfs_tar "$D/rootfs.tar"
out=$(run_logged "${DOCKER[@]}" import "$D/rootfs.tar" "$IMG") && ok import || bad import "$out"

out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm "$IMG" sh -c 'awk '\''$2=="/"{print $1, $3}'\'' /proc/mounts; cat /input.txt')
expect_match "rootfs is a FUSE mount" '^[^ ]+ fuse' "$out"
expect_match "image content readable" 'original' "$out"
grep -q '^fuse-overlayfs .*lowerdir=' "$ARGV_LOG" && ok "dockerd ran layerfuse as fuse-overlayfs" ||
  bad "dockerd ran layerfuse as fuse-overlayfs" "argv log: $(head -3 "$ARGV_LOG")"

# Two containers write the same path and see different content.
"${DOCKER[@]}" "${RUN[@]}" --name w1 "$IMG" sh -c 'echo one > /same' >/dev/null 2>&1
"${DOCKER[@]}" "${RUN[@]}" --name w2 "$IMG" sh -c 'echo two > /same' >/dev/null 2>&1
expect_eq "container 1 keeps its write (docker cp from a stopped container)" one "$("${DOCKER[@]}" cp w1:/same - 2>&1 | tar -xO 2>&1)"
expect_eq "container 2 keeps its own write" two "$("${DOCKER[@]}" cp w2:/same - 2>&1 | tar -xO 2>&1)"

# Copy-on-write.
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --name f1 "$IMG" sh -c 'echo changed > /input.txt; cat /input.txt')
expect_eq "changed image file seen by its container" changed "$out"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm "$IMG" cat /input.txt)
expect_eq "new container sees the original image file" original "$out"
out=$(run_logged "${DOCKER[@]}" start -a f1)
expect_eq "restarted container still sees its change" changed "$(printf '%s' "$out" | tail -1)"

# Removing a container discards its writes.
layer=$("${DOCKER[@]}" inspect -f '{{.GraphDriver.Data.UpperDir}}' w1 2>/dev/null)
"${DOCKER[@]}" rm w1 >/dev/null 2>&1
if [ -n "$layer" ] && [ ! -e "$layer" ]; then ok "rm removes the writable layer"; else bad "rm removes the writable layer" "upper '$layer' still there"; fi
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm "$IMG" sh -c 'cat /same 2>&1 || echo absent')
expect_match "image never saw a container's write" 'absent|No such file' "$out"

# docker diff: A / C / D.
run_logged "${DOCKER[@]}" "${RUN[@]}" --name d1 "$IMG" sh -c 'echo new > /added; echo mod >> /input.txt; rm /etc/deleteme' >/dev/null
out=$(run_logged "${DOCKER[@]}" diff d1)
expect_match "diff lists the added file" '^A /added$' "$out"
expect_match "diff lists the changed file" '^C /input.txt$' "$out"
expect_match "diff lists the deleted file" '^D /etc/deleteme$' "$out"
expect_nomatch "diff shows no whiteout names" '\.wh\.' "$out"

# commit, run from the commit, save/load.
IMG2=lfbox:2
out=$(run_logged "${DOCKER[@]}" commit d1 "$IMG2") && ok commit || bad commit "$out"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm "$IMG2" sh -c 'cat /added; cat /input.txt; ls /etc/deleteme 2>&1 || echo gone')
expect_match "committed image has the added file" '^new' "$out"
expect_match "committed image has the change" 'original.mod' "$(printf '%s' "$out" | tr '\n' ' ')"
expect_match "committed image lacks the deleted file" 'gone' "$out"
out=$(run_logged "${DOCKER[@]}" save -o "$D/lfbox2.tar" "$IMG2") && ok save || bad save "$out"
"${DOCKER[@]}" rm -f d1 >/dev/null 2>&1
out=$(run_logged "${DOCKER[@]}" rmi "$IMG2") && ok rmi || bad rmi "$out"
out=$(run_logged "${DOCKER[@]}" load -q -i "$D/lfbox2.tar") && ok load || bad load "$out"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm "$IMG2" sh -c 'cat /added; ls /etc/deleteme 2>&1 || echo gone; ls -a /etc')
expect_match "loaded image has the added file" '^new' "$out"
expect_match "loaded image lacks the deleted file" 'gone' "$out"
expect_nomatch "no whiteout marker visible in the container" '\.wh\.' "$out"

# A named volume keeps data across container replacement.
"${DOCKER[@]}" volume create v1 >/dev/null 2>&1
run_logged "${DOCKER[@]}" "${RUN[@]}" --rm -v v1:/data "$IMG" sh -c 'echo kept > /data/state' >/dev/null
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm -v v1:/data "$IMG" cat /data/state)
expect_eq "volume survives container replacement" kept "$out"

# Bind mounts both ways; read-only bind refuses writes.
mkdir -p "$D/host"
echo from-host >"$D/host/h"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm -v "$D/host:/b" "$IMG" sh -c 'cat /b/h; echo from-container > /b/c')
expect_eq "bind mount: container sees host file" from-host "$out"
expect_eq "bind mount: host sees container file" from-container "$(cat "$D/host/c" 2>&1)"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm -v "$D/host:/b:ro" "$IMG" sh -c 'echo x > /b/ro 2>&1; echo rc=$?')
expect_match "read-only bind refuses writes" 'Read-only file system' "$out"
[ -e "$D/host/ro" ] && bad "read-only bind left no file" "host/ro exists" || ok "read-only bind left no file"

out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm "$IMG" sh -c 'rm -rf /opt/app && mkdir /opt/app && echo x > /opt/app/only && ls /opt/app')
expect_eq "replaced directory is opaque" only "$out"

"${DOCKER[@]}" rm -f $("${DOCKER[@]}" ps -aq) >/dev/null 2>&1
left=$(awk -v p="$D/root" 'index($2, p) == 1' /proc/mounts | grep -c fuse)
expect_eq "no layerfuse mount left after rm" 0 "$left"
if grep -qiE 'level=(error|fatal).*(fuse|mount)' "$D/dockerd.log"; then
  log "dockerd logged mount errors:"
  grep -iE 'level=(error|fatal).*(fuse|mount)' "$D/dockerd.log" | head -5 | sed 's/^/    /'
fi
