"""A client for one repository of an OCI distribution registry (HTTP API v2).

It does two things, both over ``httpx``:

* :meth:`RegistryClient.get_manifest` fetches a manifest or index by tag or
  digest, asking for every dialect Shoal reads (``Accept``), and checks the
  bytes against the digest asked for and the ``Docker-Content-Digest`` the
  registry claims;
* :meth:`RegistryClient.fetch_blob` streams a blob into a
  :class:`~shoal.runtime.images._blobs.PartialBlob`. If the connection breaks, it
  asks again with ``Range: bytes=<what it has>-`` (a registry that answers
  ``200`` instead of ``206`` gets the download restarted); after a few
  failures it gives up but keeps the partial file, so the next pull resumes.
  The blob is verified as a whole before it is cached.

Authentication (:mod:`._registry_auth`) happens on the first ``401`` and the
resulting header is reused for the rest of the pull. Every failure becomes an
:class:`~shoal.interfaces.ImageError` naming the registry and what to check:
unreachable, refused, missing, rate-limited, or answering something that is
not a registry.
"""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from shoal.interfaces import ImageError, InvalidInput

from ._blobs import PartialBlob, corrupt_blob_error
from ._manifest import ACCEPT_MANIFESTS, Descriptor, digest_of
from ._registry_auth import Challenge, basic_authorization, fetch_token, parse_challenge

__all__ = ["RegistryClient", "check_registry_host", "registry_tls"]

MAX_MANIFEST_BYTES = 4 << 20
"""The distribution spec's limit on manifests; anything bigger is refused."""
BLOB_ATTEMPTS = 4
"""How many times one pull tries a blob before giving up (keeping the partial)."""
_FLUSH_BYTES = 1 << 20


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?i)^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


def check_registry_host(value: str, *, field: str) -> str:
    """Return ``value`` if it is ``HOST[:PORT]`` (a name, an IPv4 address or ``[IPv6]``).

    Raises:
        InvalidInput: it is not, naming ``field`` and showing the form expected.
    """
    host, port = value, ""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        ok = bool(bracket) and _is_ip(host, 6) and (not rest or rest.startswith(":"))
        port = rest[1:] if rest else ""
    else:
        if value.count(":") == 1:
            host, _, port = value.partition(":")
        ok = bool(_HOSTNAME.match(host)) or _is_ip(host, 4)
    if ok and value.endswith(":"):
        ok = False
    if ok and port:
        ok = port.isdigit() and 0 < int(port) < 65536
    if not ok:
        raise InvalidInput(
            f"{field} {value!r} is not HOST[:PORT] (e.g. registry.local:5000 or 10.0.0.5): "
            "give the registry's host and port only, no scheme or path",
            field=field,
        )
    return value


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def registry_tls(ca_file: Path) -> ssl.SSLContext:
    """Return a TLS context trusting the system's CAs and those in the PEM file ``ca_file``.

    Raises:
        InvalidInput: the file cannot be read or holds no usable certificate.
    """
    context = ssl.create_default_context()
    try:
        data = ca_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(
            f"cannot read the registry CA file {ca_file} ({why}): give a readable PEM file "
            "with --registry-ca",
            field="registry_ca",
        ) from None
    try:
        context.load_verify_locations(cadata=data)
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidInput(
            f"the registry CA file {ca_file} holds no usable PEM certificate ({exc}): give the "
            "CA certificate (-----BEGIN CERTIFICATE-----) with --registry-ca",
            field="registry_ca",
        ) from None
    return context


class RegistryClient:
    """Fetches manifests and blobs of one repository.

    Args:
        client: The HTTP client (owned by the caller).
        registry: The registry's name, for messages (``host[:port]``).
        api_host: Where its API answers (differs from the name for Docker Hub).
        repository: The repository path.
        insecure: Speak plain HTTP instead of HTTPS.
        credentials: ``(user, password)`` for basic auth or the token service.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        registry: str,
        api_host: str,
        repository: str,
        insecure: bool,
        credentials: tuple[str, str] | None,
    ) -> None:
        self._client = client
        self.registry = registry
        self.repository = repository
        self._base = f"{'http' if insecure else 'https'}://{api_host}/v2/{repository}"
        self._insecure = insecure
        self._credentials = credentials
        self._authorization: str | None = None

    async def get_manifest(self, reference: str, *, display: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index by tag or digest.

        Args:
            reference: Tag or ``sha256:`` digest.
            display: The image reference, for messages.

        Returns:
            The raw bytes, the media type served, and their digest.

        Raises:
            ImageError: not found, unreachable, refused, oversized or not matching its digest.
        """
        url = f"{self._base}/manifests/{reference}"
        async with self._request(url, {"Accept": ACCEPT_MANIFESTS}, what=display) as response:
            if response.status_code == 404:
                raise ImageError(
                    f"image {display} not found in registry {self.registry}"
                    f"{_registry_says(await _small_body(response))}; "
                    "check the repository and tag, or push the image there",
                    reference=display,
                    registry=self.registry,
                )
            self._check(response, f"manifest of {display}")
            body = bytearray()
            try:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_MANIFEST_BYTES:
                        raise self._garbage(display, "a manifest larger than 4 MiB")
            except httpx.HTTPError as exc:
                raise self._garbage(display, f"a broken response ({exc!r})") from exc
        data = bytes(body)
        digest = digest_of(data)
        claimed = response.headers.get("Docker-Content-Digest")
        for expected in (reference if reference.startswith("sha256:") else None, claimed):
            if expected and expected.startswith("sha256:") and expected != digest:
                raise corrupt_blob_error(expected, digest, f"registry {self.registry}")
        return data, response.headers.get("Content-Type", ""), digest

    async def fetch_blob(
        self,
        descriptor: Descriptor,
        partial: PartialBlob,
        *,
        display: str,
        progress: Callable[[int], None],
    ) -> None:
        """Download a blob into ``partial`` and commit it to the cache once it verifies.

        Args:
            descriptor: The blob's digest and size.
            partial: Where the bytes go; resumed from whatever it already holds.
            display: The image reference, for messages.
            progress: Called with the number of bytes held so far.

        Raises:
            ImageError: missing, unreachable after retries (partial kept), or
                corrupt (partial deleted).
        """
        url = f"{self._base}/blobs/{descriptor.digest}"
        try:
            offset = await anyio.to_thread.run_sync(partial.open)
            failures = 0
            while offset < descriptor.size or descriptor.size == 0:
                progress(offset)
                try:
                    await self._download(url, partial, offset, display=display, progress=progress)
                    if partial.offset >= descriptor.size:
                        break
                    error: Exception = ConnectionError("the response ended early")
                except (httpx.TransportError, httpx.DecodingError) as exc:
                    error = exc
                failures += 1
                offset = partial.offset
                if failures >= BLOB_ATTEMPTS:
                    raise ImageError(
                        f"downloading blob {descriptor.digest} of {display} from registry "
                        f"{self.registry} failed {failures} times (last: {error!r}); "
                        f"{offset} of {descriptor.size} bytes are kept and the next pull "
                        "resumes from there. Check the registry and the network",
                        digest=descriptor.digest,
                        registry=self.registry,
                    ) from error
                await anyio.sleep(0.0 if failures == 1 else 0.25 * failures)
            progress(partial.offset)
            await anyio.to_thread.run_sync(partial.commit)
        finally:
            partial.close()  # kept on disk for a later resume unless committed or discarded

    async def _download(
        self,
        url: str,
        partial: PartialBlob,
        offset: int,
        *,
        display: str,
        progress: Callable[[int], None],
    ) -> None:
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        async with self._request(url, headers, what=display) as response:
            if response.status_code == 404:
                raise ImageError(
                    f"blob {partial.digest} of {display} is missing from registry "
                    f"{self.registry}; the image there is incomplete: push it again",
                    digest=partial.digest,
                    registry=self.registry,
                )
            if response.status_code == 416 or (offset and response.status_code == 200):
                # No resume possible: start over (416 comes back as a short read, so retried).
                await anyio.to_thread.run_sync(partial.restart)
                if response.status_code == 416:
                    return
            self._check(response, f"blob {partial.digest} of {display}")
            if response.status_code == 206 and not _starts_at(response, offset):
                await anyio.to_thread.run_sync(partial.restart)
                return
            buffer = bytearray()
            try:
                async for chunk in response.aiter_bytes():
                    buffer += chunk
                    if len(buffer) >= _FLUSH_BYTES:
                        data = bytes(buffer)
                        buffer.clear()
                        await anyio.to_thread.run_sync(partial.write, data)
                        progress(partial.offset)
            finally:
                # Keep what arrived before a cut: it is where the next attempt resumes.
                if buffer:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(partial.write, bytes(buffer))

    @asynccontextmanager
    async def _request(
        self, url: str, headers: dict[str, str], *, what: str
    ) -> AsyncIterator[httpx.Response]:
        """Send a GET, answering one authentication challenge; yield the streaming response."""
        response = await self._send(url, headers, what)
        try:
            if response.status_code == 401:
                challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
                await response.aclose()
                self._authorization = await self._answer(challenge)
                response = await self._send(url, headers, what)
                if response.status_code == 401:
                    raise ImageError(
                        f"registry {self.registry} refused the credentials for "
                        f"{self.repository} (HTTP 401); check the credentials configured for it",
                        registry=self.registry,
                    )
            yield response
        finally:
            await response.aclose()

    async def _send(self, url: str, headers: dict[str, str], what: str) -> httpx.Response:
        if self._authorization:
            headers = {**headers, "Authorization": self._authorization}
        request = self._client.build_request("GET", url, headers=headers)
        try:
            return await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            tls = (
                ""
                if self._insecure
                else ("; if it serves plain HTTP, list it in the node's insecure registries")
            )
            raise ImageError(
                f"cannot reach registry {self.registry} for {what} ({exc!r}): check that it is "
                f"running and that host and port are right{tls}",
                registry=self.registry,
                reference=what,
            ) from exc
        except httpx.TimeoutException as exc:
            raise ImageError(
                f"registry {self.registry} did not answer in time for {what}: "
                "check that it is healthy",
                registry=self.registry,
            ) from exc
        except httpx.TransportError as exc:
            if "/blobs/" in url:
                raise  # retried (and resumed) by fetch_blob
            raise self._garbage(what, f"something that is not HTTP ({exc!r})") from exc

    async def _answer(self, challenge: Challenge | None) -> str:
        """Return the Authorization header that answers ``challenge``."""
        if challenge is None:
            raise ImageError(
                f"registry {self.registry} answered 401 without a usable WWW-Authenticate "
                "challenge; check that it is an OCI distribution registry",
                registry=self.registry,
            )
        if challenge.scheme == "bearer":
            return await fetch_token(
                self._client,
                challenge,
                registry=self.registry,
                repository=self.repository,
                credentials=self._credentials,
            )
        if challenge.scheme == "basic" and self._credentials:
            return basic_authorization(self._credentials)
        raise ImageError(
            f"registry {self.registry} requires credentials ({challenge.scheme} auth) for "
            f"{self.repository}: configure a user and password for {self.registry}",
            registry=self.registry,
        )

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        if status == 403:
            reason = "denied access to"
        elif status == 429:
            reason = "is rate-limiting requests for"
        elif status >= 500:
            reason = f"failed (HTTP {status}) serving"
        else:
            reason = f"answered HTTP {status} for"
        raise ImageError(
            f"registry {self.registry} {reason} {what}; check the registry "
            "(its logs, the credentials configured for it, and the reference)",
            registry=self.registry,
            status=status,
        )

    def _garbage(self, what: str, answer: str) -> ImageError:
        return ImageError(
            f"registry {self.registry} answered {answer} for {what}; check that "
            f"{self.registry} is an OCI distribution registry (HTTP API v2) and the port is right",
            registry=self.registry,
        )


def _starts_at(response: httpx.Response, offset: int) -> bool:
    content_range: str = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


async def _small_body(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""


def _registry_says(body: bytes) -> str:
    """Return `` (registry says: ...)`` from a distribution-spec error body, if there is one."""
    try:
        errors = json.loads(body)["errors"]
        message = "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    return f" (registry says: {message})" if message else ""
