#!/bin/sh
# Runs inside the new root (chroot) at the end of build-rootfs.sh.
set -eu

# The box's own venv, from the locked wheels only (no network, no compiler in the image).
python3 -m venv /opt/vrlms-edge
/opt/vrlms-edge/bin/pip install -q --disable-pip-version-check --no-index \
  --find-links /tmp/wheels -r /tmp/wheels/requirements.lock
/opt/vrlms-edge/bin/pip install -q --disable-pip-version-check --no-index --no-deps \
  /tmp/wheels/vrlms_edge-*.whl
cp /tmp/wheels/requirements.lock /opt/vrlms-edge/requirements.lock
# ProtectSystem=strict makes /opt read-only at run time: compile the bytecode now.
/opt/vrlms-edge/bin/python -m compileall -q /opt/vrlms-edge/lib >/dev/null
ln -sf /opt/vrlms-edge/bin/vrlms-edge /usr/local/bin/vrlms-edge

# The service runs as this user; its data dir is StateDirectory=vrlms-edge.
useradd --system --home-dir /var/lib/vrlms-edge --no-create-home \
  --shell /usr/sbin/nologin --user-group vrlms-edge

systemctl enable vrlms-edge.service vrlms-provision.service \
  systemd-networkd.service systemd-resolved.service
ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf

echo vrlms-edge > /etc/hostname
# No password logins: the box is managed through its web admin and provisioning file.
passwd -l root >/dev/null
mkdir -p /boot/efi
cat > /etc/fstab <<'EOF'
# Labels set by build-image.sh (the kernel finds the root by root=LABEL=vrlms-root).
LABEL=vrlms-root  /          ext4  defaults,errors=remount-ro,commit=5,x-systemd.growfs  0 1
LABEL=VRLMS-ESP   /boot/efi  vfat  umask=0077,nofail,x-systemd.device-timeout=90s  0 2
EOF
