"""Registries off loopback: plain HTTP only when listed as insecure, HTTPS with a private CA.

A real ``docker-registry`` listens on an address of a veth pair made for the
test (198.19.250.N/32, removed afterwards), so it is not a loopback
registry: plain HTTP there is refused unless the store lists it as insecure,
and its TLS certificate (from a CA this test makes) is trusted only with
``registry_ca``. The agent's settings reach the node's store, and a bad
``--insecure-registry`` or ``--registry-ca`` stops it at start with one line.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from scripts.build_busybox_image import BuiltImage

from shoal.agent import NodeConfig, build_node
from shoal.interfaces import ImageError
from shoal.runtime import LOOPBACK_REGISTRIES, ImageStore
from tests.runtime.images.support import LoopbackRegistry
from tests.shoal_cli import run_shoal

pytestmark = pytest.mark.anyio

WAIT = 60.0


@pytest.fixture(scope="module")
def test_address() -> Iterator[str]:
    """An address of this host that is not loopback: 198.19.250.N on a veth made for it.

    (A veth rather than a dummy interface: this kernel has no dummy module.)
    """
    missing = LoopbackRegistry.missing()
    if missing:
        pytest.skip(missing)
    name = f"shoalreg{os.getpid() % 10000}"
    peer = f"shoalrep{os.getpid() % 10000}"
    address = f"198.19.250.{1 + os.getpid() % 250}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", name], check=True)
        for link in (name, peer):
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        yield address
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)  # takes its peer along


@pytest.fixture(scope="module")
def plain_registry(
    tmp_path_factory: pytest.TempPathFactory, test_address: str, busybox: BuiltImage
) -> Iterator[str]:
    server = LoopbackRegistry(tmp_path_factory.mktemp("plain"), address=test_address)
    server.start()
    try:
        server.push(busybox.layout, "latest")
        yield server.host
    finally:
        server.stop()


def make_ca(directory: Path, address: str) -> tuple[Path, Path, Path]:
    """Write a CA certificate, and a server certificate and key for ``address`` it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Shoal test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = directory / "ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_pem = directory / "registry.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = directory / "registry.key"
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, cert_pem, key_pem


@pytest.fixture(scope="module")
def tls_registry(
    tmp_path_factory: pytest.TempPathFactory, test_address: str, busybox: BuiltImage
) -> Iterator[tuple[str, Path]]:
    """``host:port`` of an HTTPS registry holding busybox, and its CA's PEM file."""
    root = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_ca(root, test_address)
    server = LoopbackRegistry(root, address=test_address, tls=(cert, key))
    server.start()
    try:
        server.push(busybox.layout, "latest")
        yield server.host, ca
    finally:
        server.stop()


async def test_plain_http_off_loopback_needs_the_registry_listed_as_insecure(
    tmp_path: Path, plain_registry: str, busybox: BuiltImage
) -> None:
    reference = f"{plain_registry}/busybox:latest"
    strict = ImageStore(tmp_path / "strict")
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await strict.pull(reference)
    assert plain_registry in caught.value.message
    assert await strict.list() == []

    trusting = ImageStore(
        tmp_path / "trusting", insecure_registries=LOOPBACK_REGISTRIES | {plain_registry}
    )
    with anyio.fail_after(WAIT):
        info = await trusting.pull(reference)
    assert info.digest == busybox.manifest_digest


async def test_https_with_a_private_ca_needs_the_ca(
    tmp_path: Path, tls_registry: tuple[str, Path], busybox: BuiltImage
) -> None:
    host, ca = tls_registry
    reference = f"{host}/busybox:latest"
    untrusting = ImageStore(tmp_path / "untrusting")
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await untrusting.pull(reference)
    assert host in caught.value.message
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message

    trusting = ImageStore(tmp_path / "trusting", registry_ca=ca)
    with anyio.fail_after(WAIT):
        info = await trusting.pull(reference)
        prepared = await trusting.prepare(reference)
    assert info.digest == prepared.digest == busybox.manifest_digest


async def test_the_agent_settings_reach_the_node_image_store(
    tmp_path: Path, plain_registry: str, tls_registry: tuple[str, Path], busybox: BuiltImage
) -> None:
    # What `shoal agent --insecure-registry ... --registry-ca ...` builds (runc, host networking).
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    tls_host, ca = tls_registry
    config = NodeConfig(
        data_dir=tmp_path / "node",
        name="n1",
        network="host",
        insecure_registries=[plain_registry],
        registry_ca=ca,
    )
    node = build_node(config)
    assert node.images is not None
    with anyio.fail_after(WAIT):
        plain = await node.images.pull(f"{plain_registry}/busybox:latest")
        secure = await node.images.pull(f"{tls_host}/busybox:latest")
    assert plain.digest == secure.digest == busybox.manifest_digest


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--insecure-registry", "http://10.0.0.5:5000"],
            "--insecure-registry 'http://10.0.0.5:5000' is not HOST[:PORT]",
        ),
        (["--insecure-registry", "reg.local:99999"], "is not HOST[:PORT]"),
        (["--registry", "user:pw@reg.example.com"], "--registry 'user:pw@reg.example.com' is not"),
        (["--registry", "not a registry/ at all"], "is not HOST[:PORT]"),
        (["--registry-ca", "/nonexistent/ca.pem"], "cannot read the registry CA file"),
        (["--registry-ca", "GARBAGE"], "holds no usable PEM certificate"),
    ],
)
def test_the_agent_refuses_bad_registry_flags_at_start(
    tmp_path: Path, flags: list[str], expected: str
) -> None:
    if "GARBAGE" in flags:
        garbage = tmp_path / "garbage.pem"
        garbage.write_text("not a certificate\n")
        flags = [str(garbage) if f == "GARBAGE" else f for f in flags]
    done = run_shoal(
        {**os.environ, "SHOAL_HOME": str(tmp_path / "home")},
        "agent",
        "--runtime",
        "mock",
        "--data-dir",
        str(tmp_path / "data"),
        "--api-addr",
        "127.0.0.1:0",
        *flags,
        check=False,
    )
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
