#!/usr/bin/env bash
# The test suite in one command: install the Debian 12 packages the tests need, load the
# kernel modules, then run every test (mounts, the differential suite against kernel overlayfs,
# the container runtimes). As root: `sudo scripts/test.sh`. Arguments are passed to the test
# binaries (a filter, --nocapture, ...). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (sudo scripts/test.sh): the tests mount filesystems" >&2
  exit 1
fi

# What the tests run, and nothing else:
#   fuse3        fusermount3 and mount.fuse3 (lifecycle and mount-helper tests)
#   attr acl     getfattr/setfattr, setfacl (xattr and ACL copy-up tests)
#   util-linux   mount, unshare, setpriv; kmod: modprobe; procps: ps
#   podman docker.io containerd runc crun conmon catatonit uidmap busybox-static
#                the runtimes the integration tests start (private roots; busybox: test image)
#   ca-certificates  cargo fetches crates over https
#   protobuf-compiler  protoc, run by the containerd snapshotter's gRPC crate at build time
packages=(
  fuse3 attr acl util-linux kmod procps ca-certificates protobuf-compiler
  podman docker.io containerd runc crun conmon catatonit uidmap busybox-static
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi
modprobe overlay 2>/dev/null || true
modprobe fuse 2>/dev/null || true

# sudo resets PATH: find root's cargo, or the toolchain of the user who ran sudo.
if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  elif [ -n "${SUDO_USER:-}" ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -x "$user_home/.cargo/bin/cargo" ]; then
      export PATH="$user_home/.cargo/bin:$PATH"
      export CARGO_HOME="${CARGO_HOME:-$user_home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    fi
  fi
fi
command -v cargo >/dev/null || {
  echo "scripts/test.sh: no cargo found; install Rust first (https://rustup.rs)" >&2
  exit 1
}

# The suite compares layerfuse with kernel overlayfs; never let a stray variable swap the subject.
unset LAYERFUSE_TEST_IMPL
CI=true exec cargo test --release -- --test-threads=2 "$@"
