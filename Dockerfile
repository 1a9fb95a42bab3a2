# A Shoal node: the `shoal` CLI with the real parts it drives. docker-compose.yml
# builds it for a 3-node cluster (see docs/cluster.md); `docker build -t shoal .` alone works too.
FROM debian:bookworm-slim

# runc runs containers; serf is the gossip agent SerfCluster supervises; the CNI
# plugins, iproute2 and iptables wire bridge networking (scripts/system-deps.sh
# lists the same). bookworm's python3 is 3.11, which the workspace requires;
# python3-pip is only there to install uv.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        runc serf iproute2 iptables containernetworking-plugins ca-certificates \
        python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*

# uv from PyPI, as scripts/bootstrap.sh does (bookworm's pip guards the system
# Python, hence --break-system-packages); it must never download a Python of its own.
RUN python3 -m pip install --no-cache-dir --break-system-packages uv
ENV UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1

# The workspace: members, lock file, and the ontology the MCP server serves.
WORKDIR /opt/shoal
COPY pyproject.toml uv.lock ./
COPY packages ./packages
COPY ontology ./ontology
RUN uv sync --all-packages --locked --no-dev --no-cache

# 7070 REST API and MCP (servers); 7946 Serf gossip (tcp and udp); 7947 node-to-node gRPC.
EXPOSE 7070 7946/tcp 7946/udp 7947
ENTRYPOINT ["/opt/shoal/.venv/bin/shoal"]
CMD ["--help"]
