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
# Offline from the cache when every locked wheel is there already.
"$host_python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
  --no-index --find-links "$cache/wheels" -d "$cache/wheels" -r "$here/requirements.lock" \
  2>/dev/null ||
  "$host_python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    -d "$cache/wheels" -r "$here/requirements.lock"
# setuptools builds in the checkout and keeps what it copied to build/lib: a module renamed
# since the last build (a migration, say) would ship twice. Its scratch goes first.
rm -rf "$repo/build/lib" "$repo"/build/bdist.*
"$host_python" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$work/wheels" "$repo" 2>/dev/null ||
  "$host_python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/wheels" "$repo"
cp "$cache/wheels"/*.whl "$work/wheels/"
cp "$here/requirements.lock" "$work/wheels/requirements.lock"

echo ">> mmdebstrap $suite -> $out"
# force-unsafe-io: no fsync per unpacked file while building (several times faster on slow
# disks); it is taken out of the image's dpkg config at the end, where power cuts matter.
# No manuals, docs or translations on an appliance (copyright files stay).
mmdebstrap --mode=root --variant=minbase --skip=essential/unlink \
  --dpkgopt=force-unsafe-io \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --essential-hook="sync-in '$here/initramfs' /" \
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
  --customize-hook='sed -i /force-unsafe-io/d "$1"/etc/dpkg/dpkg.cfg.d/99mmdebstrap' \
  "$suite" "$out" "$mirror"
echo ">> built $out ($(du -h "$out" | cut -f1))"
