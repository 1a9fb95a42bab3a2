"""The ontology files (``ontology/*.yaml``) that the ``shoal://ontology/{entity}`` resources serve.

Where they are read from, first match wins:

1. the directory passed to :class:`Ontology` (``McpSettings.ontology_dir``);
2. ``$SHOAL_ONTOLOGY_DIR``;
3. ``shoal/mcp/ontology/`` inside the installed package (wheels carry a copy);
4. the ``ontology/`` directory of the source tree, found by walking up from
   this file (a workspace checkout, where the package is installed editable).

When none exists the server still starts; reading an ontology resource then
fails with an error that says how to point the server at the files.
"""

from __future__ import annotations

import os
from pathlib import Path

from shoal.interfaces import NotFound, Unavailable

__all__ = ["ONTOLOGY_ENV", "Ontology", "find_ontology_dir"]

ONTOLOGY_ENV = "SHOAL_ONTOLOGY_DIR"
"""Environment variable naming the ontology directory."""
_MARKER = "workload.yaml"


def _has_ontology(directory: Path) -> bool:
    return (directory / _MARKER).is_file()


def find_ontology_dir(explicit: Path | None = None) -> Path | None:
    """Return the first ontology directory of the search order above, or ``None``."""
    here = Path(__file__).resolve().parent
    candidates = [
        explicit,
        Path(os.environ[ONTOLOGY_ENV]) if os.environ.get(ONTOLOGY_ENV) else None,
    ]
    candidates.append(here / "ontology")
    candidates.extend(parent / "ontology" for parent in here.parents)
    return next((c for c in candidates if c is not None and _has_ontology(c)), None)


class Ontology:
    """The ontology entities (``workload``, ``instance``, ``node``) and their YAML text."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = find_ontology_dir(directory)
        found = [] if self.directory is None else sorted(self.directory.glob("*.yaml"))
        self.files = {path.stem: path for path in found}

    @property
    def entities(self) -> list[str]:
        """Return the entity names, sorted."""
        return sorted(self.files)

    def read(self, entity: str) -> str:
        """Return the YAML of ``entity``.

        Raises:
            Unavailable: no ontology directory was found.
            NotFound: no such entity.
        """
        if self.directory is None:
            raise Unavailable(
                "the ontology files were not found: set SHOAL_ONTOLOGY_DIR to the ontology/ "
                "directory of the Shoal source tree",
                env=ONTOLOGY_ENV,
            )
        path = self.files.get(entity.lower())
        if path is None:
            raise NotFound(
                f"no ontology entity {entity!r}: choose one of {', '.join(self.entities)}",
                entity=entity,
            )
        return path.read_text("utf-8")
