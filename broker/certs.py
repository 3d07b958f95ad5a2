"""A local certificate authority for the broker's TLS listener (`entitle broker certs`).

The production option of the design: devices authenticate with client certificates
whose CN is the device id (Mosquitto's ``use_identity_as_username``), so the same ACL
``%u`` patterns apply. Layout of the directory::

    ca.pem ca.key              the CA (key 0600); reused when present
    server.pem server.key      the broker, valid for the given host names / IPs
    clients/<id>.pem <id>.key  one per device (or cloud worker), CN = id
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.topics import check_device_id

__all__ = ["issue_local_pki"]

_Key = ec.EllipticCurvePrivateKey


def issue_local_pki(
    directory: Path | str,
    *,
    devices: Iterable[str],
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
    days: int = 825,
) -> Path:
    """Create (or reuse) the CA, a server certificate and client certificates.

    Raises:
        TopicError: a device id that is not ``[A-Za-z0-9_-]{1,64}``.
    """
    ids = [check_device_id(d) for d in devices]
    directory = Path(directory)
    (directory / "clients").mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = _load_or_create_ca(directory, now=now, days=days)

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _builder("entitle broker", server_key, ca_cert, now=now, days=days)
    server = server.add_extension(x509.SubjectAlternativeName(names), critical=False)
    server = server.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
    )
    _write(directory / "server", server_key, server.sign(ca_key, hashes.SHA256()))

    for device_id in ids:
        key = ec.generate_private_key(ec.SECP256R1())
        client = _builder(device_id, key, ca_cert, now=now, days=days).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        _write(directory / "clients" / device_id, key, client.sign(ca_key, hashes.SHA256()))
    return directory


def _builder(
    common_name: str, key: _Key, issuer: x509.Certificate, *, now: dt.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )


def _load_or_create_ca(
    directory: Path, *, now: dt.datetime, days: int
) -> tuple[_Key, x509.Certificate]:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC key")
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "entitle local CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days * 2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .sign(key, hashes.SHA256())
    )
    _write(directory / "ca", key, cert)
    return key, cert


def _write(stem: Path, key: _Key, cert: x509.Certificate) -> None:
    """``<stem>.key`` (0600, written first) and ``<stem>.pem``, each via temp + rename."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for path, data, mode in (
        (stem.with_suffix(".key"), key_pem, 0o600),
        (stem.with_suffix(".pem"), cert.public_bytes(serialization.Encoding.PEM), 0o644),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
