#!/usr/bin/env bash
# Debian packages Shoal's real parts and their tests use. Idempotent: installs
# only what is missing, and only as root (without root it says what to install).
set -euo pipefail

packages=(
    runc                          # OCI runtime the default node drives
    containerd                    # --runtime cri (CRI v1); tests start private instances
    busybox-static                # the example/test image is built from it
    umoci skopeo docker-registry  # build, push and serve test images on loopback
    containernetworking-plugins   # bridge, host-local, portmap for bridge networking
    iproute2 iptables             # network namespaces, veths, port publishing
    etcd-server                   # EtcdStore for highly available servers; tests start real etcd
    etcd-client                   # etcdctl, which EtcdStore's errors point operators to
    serf                          # gossip membership: SerfCluster supervises `serf agent`
    docker.io docker-compose      # the compose cluster (make image, tests/e2e/test_compose_cluster.py)
    debootstrap                   # its debian:bookworm-slim base where no registry has it
    chromium                      # the dashboard's browser tests (Playwright drives it, tests/ui)
)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing Debian packages: ${missing[*]}" >&2
    echo "system-deps: install them as root (apt-get install ${missing[*]}) or use --runtime mock" >&2
    exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Debian's serf package enables a system-wide agent on serf's default ports
# (7946 gossip, 7373 RPC), the ones Shoal's own supervised agents default to:
# when we installed it, keep that unit off (an operator's existing serf is theirs).
if [[ " ${missing[*]} " == *" serf "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now serf.service >/dev/null 2>&1 || true
fi

# Debian's docker.io likewise starts a system-wide dockerd (with its iptables
# rules and docker0 bridge): keep it off when we installed it. The compose test
# starts a private daemon of its own, and `make image` uses whichever DOCKER_HOST says.
if [[ " ${missing[*]} " == *" docker.io "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
fi

# Debian's containerd package likewise starts a system-wide containerd on
# /run/containerd/containerd.sock with Debian's config (no pause image it can
# pull offline): keep it off when we installed it. `make run RUNTIME=cri` starts
# one configured for Shoal (scripts/setup_containerd.py); tests start their own.
if [[ " ${missing[*]} " == *" containerd "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now containerd.service >/dev/null 2>&1 || true
fi

# Debian's etcd-server package likewise starts a system-wide etcd on 2379. Shoal's
# tests start their own etcd on free ports, and a production etcd is the
# operator's to configure: when we installed it, keep that unit off.
if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
fi
