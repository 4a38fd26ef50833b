"""Keys and TLS for the local push providers: generated per run, never real ones."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def pem_pair(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> tuple[str, str]:
    """(private key as PKCS#8 PEM, public key as PEM)."""
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def apns_key() -> tuple[str, str]:
    """An APNs token-auth key: ES256 on P-256."""
    return pem_pair(ec.generate_private_key(ec.SECP256R1()))


def service_account_key() -> tuple[str, str]:
    """A Google service-account key: RS256."""
    return pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


class LocalTLS:
    """A test CA with a certificate for localhost, offering HTTP/2 as APNs does."""

    def __init__(self) -> None:
        self._ca = trustme.CA()
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("localhost").configure_cert(self.server)
        self.server.set_alpn_protocols(["h2"])
        self.client = ssl.create_default_context()
        self._ca.configure_trust(self.client)

    def write_ca(self, path: Path) -> Path:
        """The CA as a PEM file, for SSL_CERT_FILE."""
        self._ca.cert_pem.write_to_path(str(path))
        return path
