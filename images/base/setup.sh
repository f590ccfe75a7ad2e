#!/bin/sh
# Runs inside the fresh debootstrap root (chroot) before it is imported as kiln-base.
set -eu
# The unprivileged user every job runs as.
groupadd --gid 10001 kiln
useradd --uid 10001 --gid 10001 --home-dir /home/kiln --create-home --shell /bin/sh kiln
# The workspace: a volume is mounted here at run time and inherits this owner.
mkdir -p /work
chown 10001:10001 /work
# A tmpfs takes its mode from the image's directory.
chmod 1777 /tmp
# Keep the base lean: no package lists, caches, docs or man pages.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* /usr/share/info/*
cat > /etc/dpkg/dpkg.cfg.d/01-kiln-nodoc <<'CFG'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
CFG
cat > /etc/apt/apt.conf.d/01-kiln <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
CFG
