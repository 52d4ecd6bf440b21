#!/usr/bin/env bash
# Assemble a bootable x86-64 UEFI raw disk image from the rootfs tarball, without loop
# mounts: the EFI system partition is made with mkfs.fat + mtools, the root file system with
# `mkfs.ext4 -d` (populated from a directory), and both are written into a GPT made by sfdisk.
#
#   image-build/build-image.sh ROOTFS.tar OUT.img [PROVISION.toml]
#
# Boot chain: UEFI -> systemd-boot (\EFI\BOOT\BOOTX64.EFI) -> Debian kernel + initramfs,
# root=LABEL=vrlms-root. The optional PROVISION.toml is put on the ESP as
# vrlms-provision.toml (otherwise school IT copies it there after flashing).
set -euo pipefail

rootfs=${1:?usage: build-image.sh ROOTFS.tar OUT.img [PROVISION.toml]}
out=${2:?usage: build-image.sh ROOTFS.tar OUT.img [PROVISION.toml]}
provision=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
# The ESP holds the kernel and initramfs (~45 MB): 128 MiB leaves room for two kernels.
esp_mib=${VRLMS_ESP_MIB:-128}
# Free space in the root file system of the image; the partition grows to fill the disk on
# first boot (systemd-repart + x-systemd.growfs).
root_free_mib=${VRLMS_ROOT_FREE_MIB:-512}

work=$(mktemp -d "${TMPDIR:-/tmp}/vrlms-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"
echo ">> unpacking $rootfs"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$rootfs" -C "$root"

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)
bootloader="$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

echo ">> ESP (${esp_mib} MiB, FAT32 via mtools)"
esp="$work/esp.img"
mkfs.fat -F 32 -n VRLMS-ESP -C "$esp" $((esp_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "$esp" "$bootloader" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$kernel" ::/vmlinuz
mcopy -i "$esp" "$initrd" ::/initrd.img
printf 'default vrlms-edge.conf\ntimeout 0\nconsole-mode keep\n' >"$work/loader.conf"
cat >"$work/vrlms-edge.conf" <<EOF
title   vrlms-edge classroom box
linux   /vmlinuz
initrd  /initrd.img
options root=LABEL=vrlms-root ro quiet console=tty0 console=ttyS0,115200 systemd.show_status=yes
EOF
mcopy -i "$esp" "$work/loader.conf" ::/loader/loader.conf
mcopy -i "$esp" "$work/vrlms-edge.conf" ::/loader/entries/vrlms-edge.conf
mcopy -i "$esp" "$here/vrlms-provision.example.toml" ::/vrlms-provision.example.toml
if [ -n "$provision" ]; then
  mcopy -i "$esp" "$provision" ::/vrlms-provision.toml
fi

echo ">> root file system (ext4 via mkfs.ext4 -d)"
used_mib=$(du -sm --apparent-size "$root" | cut -f1)
root_mib=$((used_mib * 115 / 100 + root_free_mib))
rootimg="$work/root.img"
mkfs.ext4 -q -F -L vrlms-root -d "$root" -E root_owner=0:0 "$rootimg" "${root_mib}M"

echo ">> GPT disk image"
# 1 MiB before the first partition and 1 MiB after the last for the GPT and its backup.
total_mib=$((1 + esp_mib + root_mib + 1))
rm -f "$out"
truncate -s "${total_mib}M" "$out"
sector=512
esp_start=2048
root_start=$((esp_start + esp_mib * 1024 * 1024 / sector))
sfdisk --quiet --no-reread --no-tell-kernel "$out" <<EOF
label: gpt
unit: sectors
start=$esp_start, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="vrlms-esp"
start=$root_start, size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="vrlms-root"
EOF
dd if="$esp" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$rootimg" of="$out" bs=1M seek=$((1 + esp_mib)) conv=notrunc,sparse status=none
echo ">> built $out: $(du -h --apparent-size "$out" | cut -f1) (on disk $(du -h "$out" | cut -f1))"
