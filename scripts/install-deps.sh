#!/bin/sh
# Installs what the proxy's development setup and tests need, only when missing.
set -eu
missing=""
[ -e /usr/lib/softhsm/libsofthsm2.so ] || [ -e /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so ] || missing="$missing softhsm2"
command -v pkcs11-tool >/dev/null 2>&1 || missing="$missing opensc"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
# The fault suite (./faults, part of make test) cuts partitions with iptables
# inside network namespaces; it runs only as root, so only root needs it.
[ "$(id -u)" -ne 0 ] || command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing="$missing iptables"
# Its slow disk is an ext4 file system on a loop device (mkfs.ext4: e2fsprogs).
[ "$(id -u)" -ne 0 ] || command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || missing="$missing e2fsprogs"
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Please install:$missing (this script knows only apt-get)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Installing:$missing"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
