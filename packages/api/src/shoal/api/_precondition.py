"""A change's ``If-Match`` header: the version of the object it was planned against.

No ``from __future__ import annotations`` here: FastAPI resolves ``Precondition``
where routes use it.
"""

from typing import Annotated

from fastapi import Depends, Request

from shoal.interfaces import IF_MATCH_HEADER, Expected

__all__ = ["Precondition"]


def _expected(request: Request) -> Expected | None:
    """The version a change expects, from its ``If-Match`` header (if sent)."""
    header = request.headers.get(IF_MATCH_HEADER)
    return None if header is None else Expected.from_etag(header)


Precondition = Annotated[Expected | None, Depends(_expected)]
"""A change's ``If-Match``: refused with 409 unless the object is that version."""
