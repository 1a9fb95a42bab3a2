"""Pure parts of the image store: references, platform selection, auth challenges."""

from __future__ import annotations

import pytest

from shoal.interfaces import ImageError, InvalidInput
from shoal.runtime import ImageReference, parse_reference
from shoal.runtime.images._manifest import Index, Platform, host_platform, select_platform
from shoal.runtime.images._registry_auth import parse_challenge

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", ImageReference(None, "busybox", "latest", None)),
        ("busybox:1.36", ImageReference(None, "busybox", "1.36", None)),
        ("library/busybox", ImageReference(None, "library/busybox", "latest", None)),
        ("127.0.0.1:5000/busybox", ImageReference("127.0.0.1:5000", "busybox", "latest", None)),
        ("localhost/a/b:v1", ImageReference("localhost", "a/b", "v1", None)),
        ("registry.test/app@" + DIGEST, ImageReference("registry.test", "app", None, DIGEST)),
        ("registry.test/app:1@" + DIGEST, ImageReference("registry.test", "app", "1", DIGEST)),
        ("[::1]:5000/x", ImageReference("[::1]:5000", "x", "latest", None)),
        ("docker.io/busybox", ImageReference("docker.io", "library/busybox", "latest", None)),
        ("my-app__v2/x.y", ImageReference(None, "my-app__v2/x.y", "latest", None)),
    ],
)
def test_references_parse_like_docker(text: str, expected: ImageReference) -> None:
    assert parse_reference(text) == expected


def test_reference_round_trips_and_names_its_api_host() -> None:
    reference = parse_reference("127.0.0.1:5000/tools/busybox:1.36@" + DIGEST)
    assert str(reference) == "127.0.0.1:5000/tools/busybox:1.36@" + DIGEST
    assert reference.manifest_ref == DIGEST
    assert reference.api_host == "127.0.0.1:5000"
    assert parse_reference("docker.io/busybox").api_host == "registry-1.docker.io"


def test_unqualified_names_get_the_default_registry() -> None:
    assert str(parse_reference("busybox", default_registry="reg.test:5000")) == (
        "reg.test:5000/busybox:latest"
    )
    assert str(parse_reference("other.test/busybox", default_registry="reg.test")) == (
        "other.test/busybox:latest"
    )
    assert str(parse_reference("busybox", default_registry="docker.io")) == (
        "docker.io/library/busybox:latest"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("BusyBox", "lowercase"),
        ("busybox:", "tag"),
        ("busybox:bad tag", "tag"),
        ("busybox@sha256:abc", "digest"),
        ("busybox@md5:" + "a" * 32, "digest"),
        ("reg.test/", "repository"),
        ("a//b", "repository"),
        ("-x", "repository"),
    ],
)
def test_bad_references_are_invalid_input_naming_the_problem(text: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as caught:
        parse_reference(text)
    assert caught.value.details["field"] == "image"


def _index(*platforms: tuple[str, str, str | None]) -> Index:
    return Index.model_validate(
        {
            "manifests": [
                {
                    "digest": "sha256:" + f"{number:064x}",
                    "size": 1,
                    "platform": {"os": os_, "architecture": arch, "variant": variant},
                }
                for number, (os_, arch, variant) in enumerate(platforms)
            ]
        }
    )


def test_platform_selection_prefers_the_exact_variant() -> None:
    index = _index(("linux", "arm", "v6"), ("linux", "arm", "v7"), ("linux", "amd64", None))
    chosen = select_platform(
        index, source="test", want=Platform(os="linux", architecture="arm", variant="v7")
    )
    assert chosen.digest == "sha256:" + f"{1:064x}"


def test_platform_selection_defaults_to_this_host() -> None:
    host = host_platform()
    index = _index(
        ("linux", "s390x", None),
        ("unknown", "unknown", None),
        ("linux", host.architecture, host.variant),
    )
    assert select_platform(index, source="test").digest == "sha256:" + f"{2:064x}"


def test_platform_selection_without_a_match_lists_what_there_is() -> None:
    index = _index(("linux", "s390x", None), ("windows", "amd64", None))
    with pytest.raises(ImageError, match=r"linux/s390x, windows/amd64") as caught:
        select_platform(index, source="image x", want=Platform(os="linux", architecture="amd64"))
    assert "linux/amd64" in caught.value.message


def test_challenges_parse_quoted_and_bare_parameters() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.test/token",service=registry.test,'
        'scope="repository:a/b:pull,push"'
    )
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.test/token",
        "service": "registry.test",
        "scope": "repository:a/b:pull,push",
    }
    basic = parse_challenge('Basic realm="x"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("") is None
