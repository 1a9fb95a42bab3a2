"""Images in the CRI runtime's own store: what ``shoal images`` does on a CRI node.

Pull, list and remove are the CRI ``ImageService`` calls (``PullImage`` with
the registry's credentials as its ``AuthConfig``, ``ListImages``,
``RemoveImage``), so the node shares its images with every other client of
the runtime. What CRI cannot do is said here, not faked:

* **import**: CRI has no import call. An OCI image layout or a ``docker
  save`` archive goes through containerd's own importer, ``ctr -n k8s.io
  images import`` on the endpoint's socket (so it needs ``ctr``, containerd's
  CLI, and a containerd endpoint; CRI-O has no equivalent);
* **progress**: ``PullImage`` reports nothing until it is done, so a pull
  reports one step, the manifest, once it has it all;
* **remove**: CRI removes an image by its id, so every tag of that image goes
  with it (the result lists them);
* **gc**: containerd collects unreferenced content itself once an image is
  removed, so there is nothing left for Shoal to free (``gc`` returns 0).
"""

from __future__ import annotations

import builtins
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio

from shoal.interfaces import ImageError, ImageInfo, ImageProgress, InvalidInput, NotFound
from shoal.runtime.images._reference import parse_reference

from ._client import CriClient, pb

__all__ = ["CriImages"]

_UNPACKED = re.compile(r"^unpacking (\S+) \((sha256:[0-9a-f]{64})\)")


def _infos(image: pb.Image, only: str | None = None) -> list[ImageInfo]:
    digests = [d.rsplit("@", 1)[1] for d in image.repo_digests if "@" in d]
    digest = digests[0] if digests else image.id
    tags = list(image.repo_tags) or [image.id]
    return [
        ImageInfo(reference=tag, digest=digest, size=image.size)
        for tag in tags
        if only is None or tag == only
    ]


class CriImages:
    """The images of a CRI runtime, as an :class:`~shoal.interfaces.ImageManager`.

    Args:
        client: The runtime's CRI client.
        credentials: ``(user, password)`` by registry host, sent with pulls from it.
        ctr: containerd's CLI, for imports.

    """

    def __init__(
        self,
        client: CriClient,
        *,
        credentials: Mapping[str, tuple[str, str]] | None = None,
        ctr: str = "ctr",
    ) -> None:
        self.client = client
        self.credentials = dict(credentials or {})
        self.ctr = ctr

    async def status(self, reference: str) -> pb.Image | None:
        """Return the runtime's image for ``reference``, or None if it has none."""
        reply = await self.client.image(
            "ImageStatus",
            pb.ImageStatusRequest(image=pb.ImageSpec(image=reference)),
            pb.ImageStatusResponse,
        )
        return reply.image if reply.HasField("image") and reply.image.id else None

    async def ensure(
        self, reference: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageInfo:
        """Return ``reference``'s image, pulling it first if the runtime lacks it.

        ``credentials`` (a pod's, by registry) are tried before the node's own.

        Raises:
            ImageError: it is missing and cannot be pulled.

        """
        image = await self.status(reference)
        if image is None:
            return await self.pull(reference, credentials=credentials)
        return self._info(reference, image)

    @staticmethod
    def _info(reference: str, image: pb.Image) -> ImageInfo:
        digests = [d.rsplit("@", 1)[1] for d in image.repo_digests if "@" in d]
        return ImageInfo(
            reference=reference, digest=digests[0] if digests else image.id, size=image.size
        )

    async def list(self) -> builtins.list[ImageInfo]:
        """Return every tag of every image in the runtime's store."""
        reply = await self.client.image("ListImages", pb.ListImagesRequest(), pb.ListImagesResponse)
        infos = [info for image in reply.images for info in _infos(image)]
        return sorted(infos, key=lambda info: info.reference)

    async def pull(
        self,
        reference: str,
        *,
        progress: Callable[[Any], object] | None = None,
        credentials: Mapping[str, tuple[str, str]] | None = None,
    ) -> ImageInfo:
        """Pull ``reference`` through the runtime (``PullImage``).

        Raises:
            ImageError: the runtime could not pull it (its reason is in the message).

        """
        auth = None
        try:
            registry = parse_reference(reference).registry
        except InvalidInput as exc:
            raise ImageError(f"cannot pull {reference!r}: {exc}", image=reference) from exc
        known = {**self.credentials, **(credentials or {})}
        if registry is not None and registry in known:
            user, password = known[registry]
            auth = pb.AuthConfig(username=user, password=password)
        request = pb.PullImageRequest(image=pb.ImageSpec(image=reference), auth=auth)
        try:
            await self.client.image("PullImage", request, pb.PullImageResponse, deadline=1800)
        except (NotFound, ImageError) as exc:
            raise ImageError(f"cannot pull {reference!r}: {exc}", image=reference) from exc
        except Exception as exc:
            message = getattr(exc, "message", str(exc))
            raise ImageError(f"cannot pull {reference!r}: {message}", image=reference) from exc
        image = await self.status(reference)
        if image is None:
            raise ImageError(f"{reference!r} was pulled but the runtime does not show it")
        info = self._info(reference, image)
        if progress is not None:
            progress(
                ImageProgress(
                    digest=info.digest,
                    kind="manifest",
                    status="downloaded",
                    completed=info.size,
                    total=info.size,
                )
            )
        return info

    async def remove(self, reference: str) -> builtins.list[ImageInfo]:
        """Remove ``reference``'s image, with every tag it has (CRI removes by image id).

        Raises:
            NotFound: the runtime has no such image.

        """
        image = await self.status(reference)
        if image is None:
            raise NotFound(f"no image {reference!r} in the CRI runtime", image=reference)
        await self.client.image(
            "RemoveImage",
            pb.RemoveImageRequest(image=pb.ImageSpec(image=image.id)),
            pb.RemoveImageResponse,
        )
        return _infos(image)

    async def gc(self, *, in_use: Iterable[str] = ()) -> int:
        """Return 0: containerd frees unreferenced content itself when an image is removed."""
        await anyio.lowlevel.checkpoint()
        return 0

    async def import_path(
        self, path: Path | str, reference: str | None = None
    ) -> builtins.list[ImageInfo]:
        """Import an OCI image layout directory or an image archive through ``ctr``.

        An OCI layout's manifests are named by their
        ``org.opencontainers.image.ref.name`` annotation (a full reference, or
        a tag given ``reference``'s name); a single image imported is also
        tagged ``reference`` when given.

        Raises:
            ImageError: the path is not an image, ``ctr`` is missing, or the
                endpoint is not a containerd socket.

        """
        source = Path(path)
        if not await anyio.Path(source).exists():
            raise ImageError(f"cannot import {source}: no such file or directory")
        address = self._address()
        ctr = shutil.which(self.ctr)
        if ctr is None:
            raise ImageError(
                "CRI has no image import: Shoal imports through containerd's `ctr`, "
                "which is not installed (apt-get install containerd)"
            )
        with tempfile.TemporaryDirectory(prefix="shoal-import-") as scratch:
            archive = source
            if await anyio.Path(source).is_dir():
                archive = Path(scratch) / "image.tar"
                await anyio.to_thread.run_sync(_tar_layout, source, archive)
            command = [ctr, "--address", address, "-n", "k8s.io", "images", "import"]
            full = normalized(reference) if reference is not None else None
            if full is not None:
                # The layout's ref.name annotations are tags: they go on the reference's name.
                command += ["--base-name", full.rsplit(":", 1)[0]]
            done = await anyio.run_process([*command, str(archive)], check=False)
        output = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            message = (done.stderr.decode(errors="replace") or output).strip()
            raise ImageError(f"cannot import {source} through ctr: {message}", path=str(source))
        names = [m.group(1) for line in output.splitlines() if (m := _UNPACKED.match(line))]
        if full is not None and len(names) == 1 and names[0] != full:
            tag = [ctr, "--address", address, "-n", "k8s.io", "images", "tag", "--force"]
            tagged = await anyio.run_process([*tag, names[0], full], check=False)
            if tagged.returncode != 0:
                message = tagged.stderr.decode(errors="replace").strip()
                raise ImageError(f"imported {names[0]} but cannot tag it {full}: {message}")
        if full is not None and full in names:
            names = [reference if name == full else name for name in names]
        result = []
        for name in names:
            image = await self.status(name)
            if image is not None:
                result.append(self._info(name, image))
        if not result:
            raise ImageError(f"{source} holds no image ctr could import: {output.strip()}")
        return result

    def _address(self) -> str:
        endpoint = self.client.endpoint
        address = endpoint.removeprefix("unix://")
        if address == endpoint and ":" in endpoint:
            raise ImageError(
                f"CRI has no image import, and {endpoint} is not a containerd socket that "
                "`ctr images import` could use: import on the node with containerd's tools"
            )
        return address


def normalized(reference: str) -> str:
    """Return ``reference`` as CRI resolves it: ``busybox:1`` is ``docker.io/library/busybox:1``.

    An image imported under a short name would not be found by CRI, which
    looks every name up in its normalized form (as Docker does).
    """
    name, at, digest = reference.partition("@")
    first, slash, _ = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if slash else f"docker.io/library/{name}"
    if not at and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name + at + digest


def _tar_layout(layout: Path, archive: Path) -> None:
    if not (layout / "index.json").is_file():
        raise ImageError(f"{layout} is not an OCI image layout (it has no index.json)")
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(os.listdir(layout)):
            tar.add(layout / entry, arcname=entry)
