#!/usr/bin/env bash
# Build the appliance root file system as a tarball: Debian bookworm (mmdebstrap, no loop
# mounts) + kernel + systemd-boot's EFI binary + the vrlms-edge package in /opt/vrlms-edge,
# installed from image-build/requirements.lock, with its units enabled.
#
#   image-build/build-rootfs.sh OUT.tar[.zst]
#
# Runs as root (mmdebstrap --mode=root). Downloads (.deb files and wheels) are cached in
# $VRLMS_IMAGE_CACHE (default ~/.cache/vrlms-image) so a second build needs no network.
set -euo pipefail

out=${1:?usage: build-rootfs.sh OUT.tar[.zst]}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
suite=${VRLMS_IMAGE_SUITE:-bookworm}
mirror=${VRLMS_IMAGE_MIRROR:-http://deb.debian.org/debian}
cache=${VRLMS_IMAGE_CACHE:-$HOME/.cache/vrlms-image}
# The image's Python is Debian's; wheels must be fetched for that interpreter.
host_python=${VRLMS_IMAGE_PYTHON:-/usr/bin/python3}

packages=(
  systemd systemd-sysv systemd-resolved udev dbus
  python3 python3-venv
  linux-image-amd64 systemd-boot-efi
  iproute2 ca-certificates e2fsprogs dosfstools kmod
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache/debs" "$cache/wheels" "$work/wheels"

echo ">> wheels for the image (requirements.lock + this checkout)"
"$host_python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
  -d "$cache/wheels" -r "$here/requirements.lock"
"$host_python" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$work/wheels" "$repo" 2>/dev/null ||
  "$host_python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/wheels" "$repo"
cp "$cache/wheels"/*.whl "$work/wheels/"
cp "$here/requirements.lock" "$work/wheels/requirements.lock"

echo ">> mmdebstrap $suite -> $out"
mmdebstrap --mode=root --variant=minbase --skip=essential/unlink \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in '$cache/debs' /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives '$cache/debs'" \
  --customize-hook="sync-in '$here/overlay' /" \
  --customize-hook="mkdir -p \"\$1/tmp/wheels\" \"\$1/usr/lib/systemd/system\" \"\$1/opt/vrlms-edge/share/doc\"" \
  --customize-hook="sync-in '$work/wheels' /tmp/wheels" \
  --customize-hook="copy-in '$repo/systemd/vrlms-edge.service' '$repo/systemd/vrlms-provision.service' /usr/lib/systemd/system/" \
  --customize-hook="copy-in '$repo/docs/provisioning.md' /opt/vrlms-edge/share/doc/" \
  --customize-hook="copy-in '$here/customize.sh' /tmp/" \
  --customize-hook='chroot "$1" sh /tmp/customize.sh' \
  --customize-hook='rm -rf "$1"/tmp/wheels "$1"/tmp/customize.sh' \
  "$suite" "$out" "$mirror"
echo ">> built $out ($(du -h "$out" | cut -f1))"
