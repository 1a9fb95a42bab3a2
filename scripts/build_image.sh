#!/usr/bin/env bash
# Build the Shoal node image (`make image`) without reaching PyPI from the build:
#
#   1. the base image debian:bookworm-slim: pulled if a registry has it, else
#      made here with debootstrap from the Debian mirror (this says so);
#   2. build/wheelhouse: every locked dependency as a wheel for the image's
#      Python (3.11, manylinux, this machine's architecture) with the lock
#      file's hashes (deps/), and the workspace's own wheels (shoal/);
#   3. `docker build`, which installs from that wheelhouse with --no-index.
#
# Usage: scripts/build_image.sh [TAG]   (default shoal:dev, the compose file's image)
# Honours DOCKER_HOST. Steps 1 and 2 need the network (Debian mirror, PyPI);
# with an existing base image and wheelhouse, SHOAL_OFFLINE=1 skips step 2.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH" UV_PYTHON_DOWNLOADS=never
tag="${1:-shoal:dev}"
base="debian:bookworm-slim"
wheelhouse="build/wheelhouse"

say() { echo "image: $*" >&2; }

docker version >/dev/null 2>&1 || {
    say "no Docker daemon answers${DOCKER_HOST:+ at $DOCKER_HOST}: start one (systemctl start docker) or set DOCKER_HOST"
    exit 1
}

# 1. The base image.
if docker image inspect "$base" >/dev/null 2>&1; then
    say "base $base: present"
elif docker pull "$base" >/dev/null 2>&1; then
    say "base $base: pulled"
else
    say "base $base: cannot be pulled; making it with debootstrap (bookworm, minbase) from the Debian mirror"
    command -v debootstrap >/dev/null || { say "debootstrap is missing: apt-get install debootstrap"; exit 1; }
    [ "$(id -u)" -eq 0 ] || { say "debootstrap needs root"; exit 1; }
    rootfs="$(mktemp -d /var/tmp/shoal-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    # What the official slim image leaves out too: package lists, docs, man pages, locales.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    say "base $base: imported from debootstrap"
fi

# 2. The wheelhouse: the locked dependencies in deps/ (downloaded again only
# when the lock changes), the workspace's own wheels in shoal/ (built every time).
# Two directories, so that the image's layer of dependencies stays cached.
deps="$wheelhouse/deps"
if [ "${SHOAL_OFFLINE:-0}" = 1 ] && [ -f "$deps/complete" ] && compgen -G "$wheelhouse/shoal/*.whl" >/dev/null; then
    say "wheelhouse: reusing $wheelhouse (SHOAL_OFFLINE=1)"
else
    mkdir -p "$wheelhouse"
    uv export --all-packages --no-dev --no-emit-workspace --frozen --quiet \
        --format requirements-txt -o "$wheelhouse/requirements.txt"
    if [ -f "$deps/complete" ] && cmp -s "$wheelhouse/requirements.txt" "$deps/requirements.txt"; then
        say "wheelhouse: dependencies unchanged in $deps"
    else
        rm -rf "$deps" && mkdir -p "$deps"
        cp "$wheelhouse/requirements.txt" "$deps/requirements.txt"
        # Wheels for the image (python3.11 of bookworm, glibc 2.36), whatever Python
        # runs here; pip ignores this machine's pip configuration (PIP_CONFIG_FILE).
        arch="$(uname -m)"
        platforms=()
        for glibc in 36 35 34 33 32 31 28 27 26 24 17 12 5; do
            platforms+=(--platform "manylinux_2_${glibc}_${arch}")
        done
        platforms+=(--platform "manylinux2014_${arch}" --platform "manylinux2010_${arch}" --platform "manylinux1_${arch}")
        PIP_CONFIG_FILE=/dev/null uvx --from pip pip download --isolated --quiet \
            --disable-pip-version-check --only-binary=:all: "${platforms[@]}" \
            --python-version 3.11 --implementation cp --abi cp311 \
            --require-hashes -r "$deps/requirements.txt" -d "$deps"
        touch "$deps/complete"
    fi
    rm -f "$wheelhouse/requirements.txt"
    rm -rf "$wheelhouse/shoal"
    uv build --all-packages --wheel --quiet -o "$wheelhouse/shoal"
    rm -f "$wheelhouse/shoal/.gitignore"
    say "wheelhouse: $(find "$wheelhouse" -name '*.whl' | wc -l) wheels in $wheelhouse"
fi

# 3. The image.
log="build/image.log"
if ! docker build --network host -t "$tag" . >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    say "docker build failed; the whole output is in $log"
    exit 1
fi
say "built $tag"
