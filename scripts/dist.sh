#!/bin/sh
# make dist: a Debian package and a tarball of the binary that `make build`
# made. Usage: scripts/dist.sh BIN VERSION OUTDIR
#   OUTDIR/xksproxy_DEBVERSION_ARCH.deb  built by dpkg-deb
#   OUTDIR/xksproxy-VERSION-linux-ARCH.tar.gz  binary, unit, example configs
set -eu
bin=$1 version=$2 out=$3
arch=$(dpkg --print-architecture 2>/dev/null || go env GOARCH)
command -v dpkg-deb >/dev/null || { echo "make dist needs dpkg-deb (apt-get install dpkg)"; exit 1; }
# Reproducible archives: every timestamp is the commit's, or SOURCE_DATE_EPOCH.
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
# A release (its tag checked out, nothing modified) is VERSION; any other
# build sorts below it and names its commit, so that dpkg upgrades from one
# build to the next.
debversion=$version
if ! { git describe --exact-match --tags --match "v$version" >/dev/null 2>&1 && git diff --quiet HEAD 2>/dev/null; }; then
	debversion="$version~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S).$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The .deb. Ownership is root's in the archive (--root-owner-group); the
# postinst creates the xksproxy user and hands it /var/lib/xksproxy.
root=$work/deb
install -D -m 0755 "$bin" "$root/usr/bin/xksproxy"
install -D -m 0644 deploy/xksproxy.service "$root/lib/systemd/system/xksproxy.service"
install -D -m 0640 deploy/node.toml "$root/etc/xksproxy/node.toml"
install -d -m 0700 "$root/var/lib/xksproxy"
doc=$root/usr/share/doc/xksproxy
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 deploy/xksproxy-rules.yml "$doc/examples/xksproxy-rules.yml"
install -D -m 0644 deploy/load-balancer.md "$doc/examples/load-balancer.md"
for f in deploy/three-site/*; do install -D -m 0644 "$f" "$doc/examples/three-site/$(basename "$f")"; done
mkdir -p "$root/DEBIAN"
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$root/DEBIAN/"
echo /etc/xksproxy/node.toml > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: xksproxy
Version: $debversion
Architecture: $arch
Maintainer: xksproxy maintainers <xksproxy@users.noreply.github.com>
Installed-Size: $size
Depends: libc6, adduser
Suggests: softhsm2, opensc
Section: net
Priority: optional
Homepage: https://github.com/xksproxy/xksproxy
Description: AWS KMS External Key Store (XKS) proxy cluster on PKCS#11 HSMs
 An XKS proxy whose nodes form a Raft cluster: AWS KMS encrypts and decrypts
 with keys that stay in your HSMs (any PKCS#11 module; SoftHSMv2 for
 development), with one control plane for key stores, credentials, keys and
 grants, and a kill switch that every node honours within a second.
CONTROL
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$out/xksproxy_${debversion}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"

# The tarball.
name=xksproxy-$version-linux-$arch
tree=$work/$name
install -D -m 0755 "$bin" "$tree/xksproxy"
install -m 0644 deploy/xksproxy.service deploy/node.toml deploy/xksproxy-rules.yml deploy/load-balancer.md README.md "$tree/"
mkdir -p "$tree/three-site"
install -m 0644 deploy/three-site/* "$tree/three-site/"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
	-C "$work" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
