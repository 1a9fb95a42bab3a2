"""Shoal's Kubernetes dialect: Kubernetes documents in, Shoal objects and warnings out.

:func:`parse_documents` takes the documents of one source (a file, a request)
in either dialect — Shoal's own (``kind: Workload``, ``ConfigMap``, ``Secret``,
``Namespace`` without an ``apiVersion``) or Kubernetes' (``apiVersion`` and
``kind``) — and returns :class:`Translation`: the objects to apply, all
validated, and a warning for every field Shoal does not honour, with its
Kubernetes path. With ``strict`` such a field is an error instead. Either way
nothing is applied when one document is wrong. :func:`merge_warnings` joins a
translation's warnings with the apply's, each ignored field once.

Depends on ``shoal.interfaces`` only (and PyYAML, watchfiles).
"""

from __future__ import annotations

from ._translate import Translation, parse_documents
from ._warnings import merge_warnings
from ._watch import ManifestWatcher, is_manifest_name, manifest_of

__all__ = [
    "ManifestWatcher",
    "Translation",
    "is_manifest_name",
    "manifest_of",
    "merge_warnings",
    "parse_documents",
]
