#!/usr/bin/env bash
# Set up an emulated AArch64 runtime for running Ember's aarch64 artifacts on this x86-64 machine:
#   - Debian packages: qemu-user (qemu-aarch64), g++-aarch64-linux-gnu (cross linker), mmdebstrap
#   - a minimal Debian 12 arm64 tree with python3.11 (unpacked, nothing emulated during setup)
#   - aarch64 wheels of the TVM runtime and numpy installed into that tree from PyPI
# Idempotent: a stamp file records a finished setup; rerunning does nothing.
#
#   scripts/setup_arm_emulation.sh [ROOTFS]        (default: ~/.cache/ember/arm64-rootfs)
set -euo pipefail
ROOTFS=${1:-${HOME}/.cache/ember/arm64-rootfs}
STAMP="$ROOTFS/.ember-ready"
PY=${PYTHON:-python3}
TVM_VERSION=$("$PY" -c "from importlib.metadata import version; print(version('apache-tvm'))" 2>/dev/null || echo 0.27.0.post1)
FFI_VERSION=$("$PY" -c "from importlib.metadata import version; print(version('apache-tvm-ffi'))" 2>/dev/null || echo 0.1.14.post1)
# numpy and ml_dtypes as on the host, so both sides compute with the same releases
pinned() { "$PY" -c "from importlib.metadata import version; print('$1==' + version('$1'))" 2>/dev/null || echo "$1"; }
NUMPY=$(pinned numpy)
ML_DTYPES=$(pinned ml_dtypes)
WANT="tvm=$TVM_VERSION ffi=$FFI_VERSION $NUMPY $ML_DTYPES"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && command -v qemu-aarch64 >/dev/null \
   && command -v aarch64-linux-gnu-g++ >/dev/null; then
  echo "arm64 emulation ready: $ROOTFS ($WANT)"
  exit 0
fi

need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x "$ROOTFS/usr/bin/python3.11" ]; then
  rm -rf "$ROOTFS.tmp"
  mkdir -p "$(dirname "$ROOTFS")"  # mmdebstrap needs the parent of its target to exist
  mmdebstrap --quiet --variant=extract --arch=arm64 --include=python3.11,libstdc++6,zlib1g \
    bookworm "$ROOTFS.tmp"
  rm -rf "$ROOTFS"
  mv "$ROOTFS.tmp" "$ROOTFS"
fi

SITE="$ROOTFS/usr/local/lib/python3.11/dist-packages"
mkdir -p "$SITE"
"$PY" -m pip install -q --upgrade --target "$SITE" --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --python-version 3.11 \
  --implementation cp --abi cp311 --abi abi3 --abi none \
  "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$FFI_VERSION" "$NUMPY" "$ML_DTYPES" typing_extensions psutil cloudpickle
# the compiler library is not needed to run modules; it is most of the tree's size
rm -f "$SITE"/tvm/libtvm_compiler.so 2>/dev/null || true
echo "$WANT" > "$STAMP"
echo "arm64 emulation ready: $ROOTFS ($WANT)"
