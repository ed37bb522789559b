#!/usr/bin/env bash
# Install layerfuse and the names container runtimes look for:
#   $PREFIX/bin/layerfuse                 the release binary
#   $PREFIX/bin/fuse-overlayfs -> layerfuse  (Docker's fuse-overlayfs driver, Podman's default
#                                         mount_program name; it behaves the same under any name)
#   $PREFIX/bin/layerfuse-driver          the storage driver (containerd snapshotter, Docker plugin)
#   $UNITDIR/layerfuse-snapshotter.service  its containerd snapshotter as a systemd service
#   $UNITDIR/layerfuse-docker.service  its Docker graphdriver plugin as a systemd service
#   $MANDIR/man1/layerfuse.1, layerfuse-SUB.1  man pages (generated from the command definitions)
#   $PREFIX/share/{bash-completion/completions/layerfuse, zsh/site-functions/_layerfuse,
#                 fish/vendor_completions.d/layerfuse.fish}  shell completions (generated too)
#   $SBINDIR/mount.fuse.layerfuse -> mount.fuse3  (so `mount -t fuse.layerfuse layerfuse MNT -o …`
#                                         and fstab lines work; mount.fuse3 then runs `layerfuse`)
# Usage: scripts/install.sh [--bin PATH] [--no-fuse-overlayfs] [--enable-uring]
#   --bin PATH   install this binary instead of building one (cargo build --release)
#   --no-fuse-overlayfs  do not create the fuse-overlayfs name
#   --enable-uring  turn on the kernel's FUSE-over-io_uring now (fuse.enable_uring=1) and at
#                boot (/etc/modprobe.d/layerfuse-uring.conf); layerfuse never does it itself
# Environment: PREFIX (default /usr/local), SBINDIR (default /sbin), MANDIR (default
# $PREFIX/share/man), DESTDIR (staging root),
# UNITDIR (default /etc/systemd/system).
# mount(8) runs helpers with its own PATH, so layerfuse must live in a standard directory
# (/usr/local/bin, /usr/bin, /sbin): do not point PREFIX at a private dir if you want mount -t.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
SBINDIR=${SBINDIR:-/sbin}
DESTDIR=${DESTDIR:-}
bin=""
fuse_overlayfs=1
enable_uring=0
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --no-fuse-overlayfs) fuse_overlayfs=0; shift ;;
    --enable-uring) enable_uring=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release --locked
  bin=${CARGO_TARGET_DIR:-target}/release/layerfuse
fi
[ -x "$bin" ] || { echo "install.sh: $bin is not an executable" >&2; exit 1; }

install -d "$DESTDIR$PREFIX/bin" "$DESTDIR$SBINDIR"
# Replace atomically: a running daemon keeps its old inode.
install -m 0755 "$bin" "$DESTDIR$PREFIX/bin/.layerfuse.new"
mv -f "$DESTDIR$PREFIX/bin/.layerfuse.new" "$DESTDIR$PREFIX/bin/layerfuse"
if [ "$fuse_overlayfs" = 1 ]; then
  ln -sfn layerfuse "$DESTDIR$PREFIX/bin/fuse-overlayfs"
fi
# Man pages and completions, rendered by the installed binary from its own definitions.
lf="$DESTDIR$PREFIX/bin/layerfuse"
MANDIR=${MANDIR:-$PREFIX/share/man}
share="$DESTDIR$PREFIX/share"
install -d "$DESTDIR$MANDIR/man1" "$share/bash-completion/completions" \
  "$share/zsh/site-functions" "$share/fish/vendor_completions.d"
"$lf" man "$DESTDIR$MANDIR/man1"
"$lf" completions bash >"$share/bash-completion/completions/layerfuse"
"$lf" completions zsh >"$share/zsh/site-functions/_layerfuse"
"$lf" completions fish >"$share/fish/vendor_completions.d/layerfuse.fish"
helper=$(command -v mount.fuse3 || echo /sbin/mount.fuse3)
[ -e "$helper" ] || echo "install.sh: warning: mount.fuse3 not found (apt-get install fuse3)" >&2
ln -sfn "$helper" "$DESTDIR$SBINDIR/mount.fuse.layerfuse"
# The storage driver, when built (cargo build --release builds the whole workspace).
driver=$(dirname "$bin")/layerfuse-driver
if [ -x "$driver" ]; then
  install -m 0755 "$driver" "$DESTDIR$PREFIX/bin/.layerfuse-driver.new"
  mv -f "$DESTDIR$PREFIX/bin/.layerfuse-driver.new" "$DESTDIR$PREFIX/bin/layerfuse-driver"
  UNITDIR=${UNITDIR:-/etc/systemd/system}
  install -d "$DESTDIR$UNITDIR"
  sed "s#/usr/local/bin/#$PREFIX/bin/#g" driver/deploy/layerfuse-snapshotter.service \
    >"$DESTDIR$UNITDIR/layerfuse-snapshotter.service"
  sed "s#/usr/local/bin/#$PREFIX/bin/#g" driver/units/layerfuse-docker.service \
    >"$DESTDIR$UNITDIR/layerfuse-docker.service"
  if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
  echo "installed layerfuse-driver, $DESTDIR$UNITDIR/layerfuse-snapshotter.service and layerfuse-docker.service"
fi
echo "installed $("$DESTDIR$PREFIX/bin/layerfuse" --version) in $DESTDIR$PREFIX/bin" \
  "(layerfuse$([ "$fuse_overlayfs" = 1 ] && echo ', fuse-overlayfs')), $DESTDIR$SBINDIR/mount.fuse.layerfuse," \
  "man pages in $DESTDIR$MANDIR/man1 and bash/zsh/fish completions"
if [ "$enable_uring" = 1 ]; then
  install -d "$DESTDIR/etc/modprobe.d"
  echo "options fuse enable_uring=1" >"$DESTDIR/etc/modprobe.d/layerfuse-uring.conf"
  if [ -z "$DESTDIR" ] && [ -w /sys/module/fuse/parameters/enable_uring ]; then
    echo 1 >/sys/module/fuse/parameters/enable_uring
  fi
  echo "FUSE-over-io_uring enabled ($DESTDIR/etc/modprobe.d/layerfuse-uring.conf)"
fi
