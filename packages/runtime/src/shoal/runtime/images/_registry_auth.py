"""Registry authentication: the ``WWW-Authenticate`` challenge and what answers it.

The distribution spec's flow: an anonymous request gets ``401`` with a
challenge. ``Basic realm=...`` asks for the user's credentials on every
request. ``Bearer realm=<url>,service=<s>,scope=<s>`` sends the client to a
token service: ``GET <realm>?service=<s>&scope=<s>`` (with the credentials as
basic auth when there are any, anonymously otherwise) answers
``{"token": ...}`` (or ``access_token``), and the original request is retried
with ``Authorization: Bearer <token>``. When the challenge names no scope,
the client asks for ``repository:<name>:pull``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

import httpx

from shoal.interfaces import ImageError

__all__ = ["Challenge", "basic_authorization", "fetch_token", "parse_challenge"]

_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    scheme: str
    """``bearer`` or ``basic`` (lowercased)."""
    params: dict[str, str] = field(default_factory=dict)
    """``realm``, ``service``, ``scope``, ... with quotes removed."""


def parse_challenge(header: str | None) -> Challenge | None:
    """Parse a ``WWW-Authenticate`` header; None if there is none or it is unreadable."""
    if not header or not header.strip():
        return None
    scheme, _, rest = header.strip().partition(" ")
    params = {
        match.group(1).lower(): (
            match.group(2).replace('\\"', '"') if match.group(2) is not None else match.group(3)
        )
        for match in _PARAM.finditer(rest)
    }
    return Challenge(scheme.lower(), params)


def basic_authorization(credentials: tuple[str, str]) -> str:
    """Return the ``Authorization`` value for HTTP basic auth."""
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


async def fetch_token(
    client: httpx.AsyncClient,
    challenge: Challenge,
    *,
    registry: str,
    repository: str,
    credentials: tuple[str, str] | None,
) -> str:
    """Get a bearer token from the token service a challenge points at.

    Returns:
        The ``Authorization`` header value (``Bearer <token>``).

    Raises:
        ImageError: the challenge names no realm, the token service is down,
            refuses the credentials, or answers something that is not a token.
    """
    realm = challenge.params.get("realm")
    if not realm:
        raise ImageError(
            f"registry {registry} asked for a bearer token but named no token service (realm)",
            registry=registry,
        )
    query = {"scope": challenge.params.get("scope") or f"repository:{repository}:pull"}
    if challenge.params.get("service"):
        query["service"] = challenge.params["service"]
    headers = {"Authorization": basic_authorization(credentials)} if credentials else {}
    try:
        response = await client.get(realm, params=query, headers=headers)
    except httpx.HTTPError as exc:
        raise ImageError(
            f"cannot get a token for registry {registry} from {realm}: {exc!r}; "
            "check that the token service is reachable",
            registry=registry,
        ) from exc
    if response.status_code in (401, 403):
        advice = (
            "check the credentials configured for it"
            if credentials
            else f"configure credentials for {registry}"
        )
        raise ImageError(
            f"the token service of registry {registry} ({realm}) refused access to "
            f"{query['scope']} (HTTP {response.status_code}): {advice}",
            registry=registry,
        )
    if response.status_code != 200:
        raise ImageError(
            f"the token service of registry {registry} ({realm}) answered HTTP "
            f"{response.status_code}; check the registry's auth configuration",
            registry=registry,
        )
    try:
        body = response.json()
        token = body.get("token") or body.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise ImageError(
            f"the token service of registry {registry} ({realm}) answered something "
            "that is not a token; check the registry's auth configuration",
            registry=registry,
        )
    return f"Bearer {token}"
