#!/usr/bin/env bash
# dockerd 20.10 on the layerfuse graphdriver plugin (driver/tests/docker.rs runs this):
# import, run, exec, diff, commit, save (loaded into a dockerd on kernel overlay2: same
# files), rm, rmi, a cached 3-step build, the behaviours of container-storage.md, a plugin
# restart with stopped containers, and kill -9 of the plugin during a load and a commit.
# LAYERFUSE_DRIVER_BIN: the layerfuse-driver binary under test.
source "$(dirname "$0")/../../scripts/runtime/lib.sh"

DRV=${LAYERFUSE_DRIVER_BIN:?LAYERFUSE_DRIVER_BIN must name layerfuse-driver}
require_root_fuse
ensure_cmd dockerd docker.io
ensure_cmd containerd containerd
ensure_cmd runc runc
DOCKER_CLI=/usr/bin/docker
[ -x "$DOCKER_CLI" ] || skip "$DOCKER_CLI missing (docker.io installs it)"

D=$RT_DIR
NAME=lft$$
SOCK=/run/docker/plugins/$NAME.sock
ROOT=$D/store
RT_CLEANUPS+=("rm -f $SOCK")
PLUGIN_PID=

start_plugin() {
  "$DRV" docker --root "$ROOT" --socket "$SOCK" --log info >>"$D/plugin.log" 2>&1 &
  PLUGIN_PID=$!
  RT_PIDS+=("$PLUGIN_PID")
  poll 20 test -S "$SOCK" || { bad "plugin started" "no socket $SOCK"; tail -5 "$D/plugin.log"; exit 1; }
}
start_plugin
mode=$(stat -c %a "$SOCK")
expect_eq "plugin socket is root-only" 600 "$mode"

# start_dockerd DIR DRIVER: a private dockerd; sets DK to its client command.
start_dockerd() {
  mkdir -p "$1"
  dockerd --experimental --data-root "$1/root" --exec-root "$1/exec" -H "unix://$1/docker.sock" \
    --pidfile "$1/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
    --storage-driver "$2" >"$1/dockerd.log" 2>&1 &
  RT_PIDS+=($!)
  DK=("$DOCKER_CLI" -H "unix://$1/docker.sock")
  if ! poll 60 "${DK[@]}" version; then
    tail -20 "$1/dockerd.log" | sed 's/^/    dockerd: /'
    bad "dockerd ($2) started" "no answer within 60 s"
    exit 1
  fi
}
start_dockerd "$D/d1" "$NAME"
DOCKER=("${DK[@]}")
ok "dockerd answers on the plugin ($SECONDS s)"
out=$("${DOCKER[@]}" info 2>&1)
expect_match "docker info names the plugin" "Storage Driver: $NAME" "$out"
expect_match "docker info shows the store root" "Root Dir: $ROOT" "$out"
expect_match "docker info shows deduplicated bytes" "Deduplicated Bytes: [0-9]+" "$out"

RUN=(run --network none)
IMG=lfbox:1
make_rootfs_tar "$D/rootfs.tar"
out=$(run_logged "${DOCKER[@]}" import "$D/rootfs.tar" "$IMG") && ok import || bad import "$out"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm "$IMG" sh -c 'awk '\''$2=="/"{print $3}'\'' /proc/mounts; cat /input.txt')
expect_match "rootfs is a layerfuse mount" '^fuse.layerfuse|^fuse' "$out"
expect_match "image content readable" 'original' "$out"

# exec into a running container.
"${DOCKER[@]}" "${RUN[@]}" -d --name ex "$IMG" sleep 300 >/dev/null 2>&1
out=$(run_logged "${DOCKER[@]}" exec ex sh -c 'echo via-exec > /tmp/e; cat /tmp/e')
expect_eq "exec runs in the container's union" via-exec "$out"
"${DOCKER[@]}" rm -f ex >/dev/null 2>&1

# Two containers write the same path; each keeps its own (docker cp from stopped containers).
"${DOCKER[@]}" "${RUN[@]}" --name w1 "$IMG" sh -c 'echo $RANDOM$RANDOM > /same' >/dev/null 2>&1
"${DOCKER[@]}" "${RUN[@]}" --name w2 "$IMG" sh -c 'echo $RANDOM$RANDOM > /same' >/dev/null 2>&1
a=$("${DOCKER[@]}" cp w1:/same - 2>&1 | tar -xO 2>&1)
b=$("${DOCKER[@]}" cp w2:/same - 2>&1 | tar -xO 2>&1)
expect_match "stopped container 1 keeps its write" '^[0-9]+$' "$a"
if [ "$a" != "$b" ]; then ok "two containers wrote different numbers"; else bad "two containers wrote different numbers" "$a = $b"; fi

# Copy-on-write.
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --name f1 "$IMG" sh -c 'echo changed > /input.txt; cat /input.txt')
expect_eq "changed image file seen by its container" changed "$out"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm "$IMG" cat /input.txt)
expect_eq "new container sees the original image file" original "$out"

# rm removes the writable layer.
layer=$("${DOCKER[@]}" inspect -f '{{.GraphDriver.Data.UpperDir}}' w1 2>/dev/null)
[ -d "$layer" ] && ok "container layer is in the store" || bad "container layer is in the store" "'$layer'"
"${DOCKER[@]}" rm w1 >/dev/null 2>&1
if [ -n "$layer" ] && [ ! -e "$layer" ]; then ok "rm removes the writable layer"; else bad "rm removes the writable layer" "'$layer' still there"; fi

# Plugin restart while containers are stopped loses nothing.
stop_pid "$PLUGIN_PID"
start_plugin
out=$(run_logged "${DOCKER[@]}" start -a f1)
expect_eq "after a plugin restart the stopped container keeps its change" changed "$(printf '%s' "$out" | tail -1)"
out=$("${DOCKER[@]}" cp w2:/same - 2>&1 | tar -xO 2>&1)
expect_eq "after a plugin restart docker cp reads a stopped container" "$b" "$out"

# docker diff: A / C / D, no whiteout names.
run_logged "${DOCKER[@]}" "${RUN[@]}" --name d1 "$IMG" sh -c 'echo new > /added; echo mod >> /input.txt; rm /etc/deleteme; mv /opt/app /opt/moved' >/dev/null
out=$(run_logged "${DOCKER[@]}" diff d1)
expect_match "diff lists the added file" '^A /added$' "$out"
expect_match "diff lists the changed file" '^C /input.txt$' "$out"
expect_match "diff lists the deleted file" '^D /etc/deleteme$' "$out"
expect_match "diff lists a renamed directory's old name as deleted" '^D /opt/app$' "$out"
expect_match "diff lists a renamed directory's content as added" '^A /opt/moved/a$' "$out"
expect_nomatch "diff shows no whiteout names" '\.wh\.' "$out"

# commit, run from the commit, save, rmi, load.
IMG2=lfbox:2
out=$(run_logged "${DOCKER[@]}" commit d1 "$IMG2") && ok commit || bad commit "$out"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm "$IMG2" sh -c 'cat /added; cat /input.txt; ls /etc/deleteme 2>&1 || echo gone; cat /opt/moved/b; ls /opt')
expect_match "committed image has the added file" '^new' "$out"
expect_match "committed image has the change" 'original.mod' "$(printf '%s' "$out" | tr '\n' ' ')"
expect_match "committed image lacks the deleted file" 'gone' "$out"
expect_eq "committed image has the renamed directory only" "moved" "$(printf '%s' "$out" | tail -1)"
out=$(run_logged "${DOCKER[@]}" save -o "$D/lfbox2.tar" "$IMG2") && ok save || bad save "$out"
"${DOCKER[@]}" rm -f d1 f1 w2 >/dev/null 2>&1
out=$(run_logged "${DOCKER[@]}" rmi "$IMG2") && ok rmi || bad rmi "$out"
out=$(run_logged "${DOCKER[@]}" load -q -i "$D/lfbox2.tar") && ok "load what was saved" || bad "load what was saved" "$out"

# The saved image on a dockerd with kernel overlay2 shows the same files.
# /etc/mtab, hosts, hostname, resolv.conf and .dockerenv are made by dockerd per container.
LISTING='find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /etc/hosts -o -path /etc/hostname -o -path /etc/resolv.conf -o -path /.dockerenv -o -path /etc/mtab \) -prune -o -print | sort | while read -r f; do if [ -f "$f" ] && [ ! -L "$f" ]; then s=$(sha256sum "$f" | cut -c1-16); else s=-; fi; if [ -d "$f" ] && [ ! -L "$f" ]; then t=-; else t=$(stat -c %Y "$f"); fi; echo "$(stat -c "%n %A %u %g %h %F" "$f") $t $s"; done'
ours=$("${DOCKER[@]}" "${RUN[@]}" --rm "$IMG2" sh -c "$LISTING" 2>&1)
start_dockerd "$D/d2" overlay2
KERNEL=("${DK[@]}")
out=$(run_logged "${KERNEL[@]}" load -q -i "$D/lfbox2.tar") && ok "overlay2 dockerd loads the saved image" || bad "overlay2 dockerd loads the saved image" "$out"
theirs=$("${KERNEL[@]}" "${RUN[@]}" --rm "$IMG2" sh -c "$LISTING" 2>&1)
# Column 5 is the link count: the union shows the store record's count (the tar's), not the
# shared object's; checked on its own below so a difference there is named as such.
nolinks() { printf '%s\n' "$1" | awk '{$5=""; print}'; }
if [ "$(nolinks "$ours")" = "$(nolinks "$theirs")" ] && [ "$(printf '%s\n' "$ours" | wc -l)" -gt 100 ]; then
  ok "saved image shows identical files on kernel overlay2: names, modes, owners, types, times, contents ($(printf '%s\n' "$ours" | wc -l) entries)"
else
  bad "saved image shows identical files on kernel overlay2" "$(diff <(nolinks "$ours") <(nolinks "$theirs") | head -10)"
fi
if [ "$ours" = "$theirs" ]; then
  ok "link counts as the tar said (stat through the union)"
else
  bad "link counts as the tar said (stat through the union)" "$(diff <(printf '%s\n' "$ours") <(printf '%s\n' "$theirs") | head -10)"
fi
stop_pid "${RT_PIDS[-1]}"
unset 'RT_PIDS[-1]'

# A named volume outlives its container; binds work both ways; read-only bind refuses writes.
"${DOCKER[@]}" volume create v1 >/dev/null 2>&1
run_logged "${DOCKER[@]}" "${RUN[@]}" --rm -v v1:/data "$IMG" sh -c 'echo kept > /data/state' >/dev/null
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm -v v1:/data "$IMG" cat /data/state)
expect_eq "named volume outlives its container" kept "$out"
mkdir -p "$D/host"
echo from-host >"$D/host/h"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm -v "$D/host:/b" "$IMG" sh -c 'cat /b/h; echo from-container > /b/c')
expect_eq "bind mount: container sees host file" from-host "$out"
expect_eq "bind mount: host sees container file" from-container "$(cat "$D/host/c" 2>&1)"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm -v "$D/host:/b:ro" "$IMG" sh -c 'echo x > /b/ro 2>&1; echo rc=$?')
expect_match "read-only bind refuses writes" 'Read-only file system' "$out"

# A 3-step build from the loaded base, rebuilt after changing the last step.
mkdir -p "$D/ctx"
printf 'FROM %s\nRUN echo one > /one\nRUN echo two > /two\nRUN echo step3-first > /three\n' "$IMG" >"$D/ctx/Dockerfile"
out=$(DOCKER_BUILDKIT=0 run_logged "${DOCKER[@]}" build -t lfbuild:1 "$D/ctx") && ok "build" || bad "build" "$out"
sed -i 's/step3-first/step3-second/' "$D/ctx/Dockerfile"
out=$(DOCKER_BUILDKIT=0 run_logged "${DOCKER[@]}" build -t lfbuild:2 "$D/ctx")
expect_eq "rebuild takes the first two steps from the cache" 2 "$(printf '%s\n' "$out" | grep -c 'Using cache')"
expect_match "rebuild reruns the changed step" 'Running in' "$out"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm lfbuild:2 cat /one /two /three)
expect_eq "rebuilt image holds every step" "one two step3-second" "$(printf '%s' "$out" | tr '\n' ' ' | sed 's/ $//')"

# kill -9 of the plugin during a load and during a commit; dockerd recovers after a restart.
no_half_layer() {
  # Staged work of a live import (dockerd retries) may be under way; what matters is what
  # is listed: every filled layer gives back its diffID, byte for byte.
  out=$(run_logged "$DRV" layer verify --root "$ROOT")
  expect_nomatch "$1: every listed layer is whole after a restart" 'BAD|rror' "$out"
  expect_match "$1: the store opens and verifies" ': ok' "$out"
}
big=$D/big
mkdir -p "$big/rootfs/data"
cp -a "$D/rootfs/." "$big/rootfs/"
head -c 200M /dev/urandom >"$big/rootfs/data/blob"
tar -C "$big/rootfs" -cf "$big/rootfs.tar" .
"${DOCKER[@]}" import "$big/rootfs.tar" lfbig:1 >"$D/import.out" 2>&1 &
imp=$!
poll 60 sh -c "ls $ROOT/store/staging/*/blobs/* >/dev/null 2>&1" && ok "import under way" || bad "import under way" "no staged blob"
kill -KILL "$PLUGIN_PID"
start_plugin
wait "$imp"
no_half_layer "kill -9 during import"
out=$(run_logged "${DOCKER[@]}" import "$big/rootfs.tar" lfbig:1) && ok "dockerd imports again after the plugin restart" || bad "dockerd imports again after the plugin restart" "$out"
"${DOCKER[@]}" "${RUN[@]}" --name cm "$IMG" sh -c 'head -c 100000000 /dev/urandom > /fat' >/dev/null 2>&1
"${DOCKER[@]}" commit cm lfcommit:1 >"$D/commit.out" 2>&1 &
com=$!
poll 60 sh -c "ls $ROOT/store/staging/*/blobs/* >/dev/null 2>&1" && ok "commit under way" || bad "commit under way" "no staged blob"
kill -KILL "$PLUGIN_PID"
start_plugin
wait "$com"
no_half_layer "kill -9 during commit"
out=$(run_logged "${DOCKER[@]}" commit cm lfcommit:1) && ok "dockerd commits again after the plugin restart" || bad "dockerd commits again after the plugin restart" "$out"
out=$(run_logged "${DOCKER[@]}" "${RUN[@]}" --rm lfcommit:1 sh -c 'wc -c < /fat')
expect_eq "the committed image is whole" 100000000 "$out"

# rm and rmi leave the store empty of container layers and mounts.
"${DOCKER[@]}" rm -f $("${DOCKER[@]}" ps -aq) >/dev/null 2>&1
"${DOCKER[@]}" rmi -f lfbig:1 lfcommit:1 lfbuild:1 lfbuild:2 "$IMG2" >/dev/null 2>&1
left=$(awk -v p="$ROOT" 'index($2, p) == 1' /proc/mounts | wc -l)
expect_eq "no union left mounted" 0 "$left"
out=$("$DRV" layer ls --root "$ROOT" --format json)
expect_match "no container layer left after rm" '"container_layers": 0' "$out"
