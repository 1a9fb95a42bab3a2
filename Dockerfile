# A Shoal node: the `shoal` CLI with the real parts it drives. Build it with
# `make image` (docs/cluster.md): that makes the wheelhouse this file installs
# from, so the build itself never reaches PyPI. It works with the classic
# builder (docker-compose 1.29) and with BuildKit.
FROM debian:bookworm-slim AS base

# runc runs containers; serf is the gossip agent SerfCluster supervises; the CNI
# plugins, iproute2 and iptables wire bridge networking (scripts/system-deps.sh
# lists the same). bookworm's python3 is 3.11, which the workspace requires.
# These come from the base image's Debian mirror (or the apt proxy or local
# mirror an air-gapped site points it at), the only network the build uses.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        runc serf iproute2 iptables containernetworking-plugins ca-certificates \
        python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# The environment, installed offline from build/wheelhouse: every locked
# dependency, checked against the lock file's hashes, then the workspace's own
# wheels (which carry the ontology the MCP server serves). A stage of its own,
# so the wheels stay out of the final image; two layers, so a change to Shoal
# alone reuses the dependencies' layer.
FROM base AS venv
COPY build/wheelhouse/deps /tmp/wheelhouse/deps
RUN python3 -m venv /opt/shoal/.venv \
    && /opt/shoal/.venv/bin/pip install --quiet --no-index --no-cache-dir \
        --disable-pip-version-check --find-links /tmp/wheelhouse/deps \
        --require-hashes -r /tmp/wheelhouse/deps/requirements.txt
COPY build/wheelhouse/shoal /tmp/wheelhouse/shoal
RUN /opt/shoal/.venv/bin/pip install --quiet --no-index --no-cache-dir \
        --disable-pip-version-check --no-deps /tmp/wheelhouse/shoal/*.whl

FROM base
COPY --from=venv /opt/shoal/.venv /opt/shoal/.venv
COPY docker/entrypoint.sh /usr/local/bin/shoal-entrypoint
# `docker compose exec server shoal ...` finds the CLI.
ENV PATH=/opt/shoal/.venv/bin:$PATH

# 7070 REST API and MCP (servers); 7946 Serf gossip (tcp and udp); 7947 node-to-node gRPC.
EXPOSE 7070 7946/tcp 7946/udp 7947
ENTRYPOINT ["/usr/local/bin/shoal-entrypoint"]
CMD ["--help"]
