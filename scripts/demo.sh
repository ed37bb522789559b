#!/usr/bin/env bash
# Demo: build layerfuse, mount a small union, and show merging, copy-up and a whiteout.
# Needs root (or a user allowed to mount FUSE) on Linux with /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && ! command -v fusermount3 >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 attr >/dev/null
fi
cargo build --release -q
bin=$PWD/target/release/layerfuse

demo=$(mktemp -d /tmp/layerfuse-demo.XXXXXX)
cleanup() {
  "$bin" umount "$demo/merged" 2>/dev/null || true
  rm -rf "$demo"
}
trap cleanup EXIT
mkdir -p "$demo"/{base,app,upper,merged}
echo "from base"       > "$demo/base/os-release"
echo "base config"     > "$demo/base/config"
echo "app config"      > "$demo/app/config"
echo "delete me"       > "$demo/base/junk"
mkdir "$demo/base/etc" && echo "base" > "$demo/base/etc/a" && mkdir "$demo/app/etc" && echo "app" > "$demo/app/etc/b"

show() { printf '\n$ %s\n' "$*"; "$@"; }
say() { printf '\n# %s\n' "$*"; }

say "two lower layers: app (top) over base; a writable upper"
show "$bin" mount --lower "$demo/app:$demo/base" --upper "$demo/upper" "$demo/merged"
say "merging: the top layer wins, directories merge"
show ls "$demo/merged" "$demo/merged/etc"
show cat "$demo/merged/config"
say "copy-up: writing a lower file copies it into the upper first; the layer is untouched"
show sh -c "echo 'changed' >> '$demo/merged/os-release'"
show cat "$demo/merged/os-release"
show cat "$demo/base/os-release"
show ls -l "$demo/upper"
say "whiteout: deleting a lower file leaves a 0/0 character device in the upper"
show rm "$demo/merged/junk"
show ls "$demo/merged"
show ls -l "$demo/upper/junk"
say "unmount: the daemon exits; the upper keeps the changes (kernel overlayfs reads it the same way)"
show "$bin" umount "$demo/merged"
