"""`shoal cluster init`: the secrets every node of one cluster shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ._base import cluster_app, fail, out

TOKEN_FILE = "join-token"
GOSSIP_KEY_FILE = "gossip-key"


@cluster_app.command("init")
def cluster_init(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory to write join-token and gossip-key to.")
    ] = Path("cluster-secrets"),
    force: Annotated[bool, typer.Option(help="Replace existing secrets.")] = False,
) -> None:
    """Create a cluster's join token and gossip key (files of mode 0600).

    Give both files to every node: `shoal agent --join-token-file DIR/join-token
    --gossip-key-file DIR/gossip-key`.
    """
    from shoal.cluster import new_gossip_key, new_join_token  # gRPC and all: on use only

    files = {TOKEN_FILE: new_join_token(), GOSSIP_KEY_FILE: new_gossip_key()}
    existing = [name for name in files if (out_dir / name).exists()]
    if existing and not force:
        fail(
            f"{out_dir} already holds {', '.join(existing)}: the nodes of that cluster use them; "
            "pass --force to replace them (every node then needs the new files)"
        )
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, secret in files.items():
            path = out_dir / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secret + "\n")
            path.chmod(0o600)
    except OSError as exc:
        fail(f"cannot write the secrets to {out_dir}: {exc.strerror or exc}")
    token, key = out_dir / TOKEN_FILE, out_dir / GOSSIP_KEY_FILE
    out.print(f"wrote {token} and {key}", markup=False, highlight=False)
    out.print(
        f"start every node with: shoal agent --join-token-file {token} --gossip-key-file {key}",
        markup=False,
        highlight=False,
    )
