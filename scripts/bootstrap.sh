#!/usr/bin/env bash
# Install what Shoal needs on a fresh Debian machine: uv (from PyPI through
# pip, since uv's own installer downloads from outside the package
# registries), then the locked Python environment. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
        echo "bootstrap: installing python3 and pip with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip python3-venv >/dev/null
    fi
    echo "bootstrap: installing uv with pip" >&2
    python3 -m pip install --quiet uv 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages uv
fi

# pip may have put uv in ~/.local/bin (a --user install); the Makefile adds it
# to PATH too, so later `uv run` calls find it.
export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
    echo "bootstrap: uv was installed but is not on PATH; check 'python3 -m pip show uv'" >&2
    exit 1
fi

# Never let uv try to download a Python build: this network has none to give.
export UV_PYTHON_DOWNLOADS=never
# Bytecode now, not on each run: these machines set PYTHONDONTWRITEBYTECODE, so
# without it every `shoal` command would compile its imports afresh (~2x slower).
# uv compiles site-packages only; the workspace's own packages are editable
# installs, so their sources are compiled too (__pycache__ is git-ignored).
uv sync --all-packages --locked --quiet --compile-bytecode
uv run --no-sync python -m compileall -q packages/*/src >/dev/null
