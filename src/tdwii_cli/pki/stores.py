"""Java (dcm4che) key and trust stores: PKCS#12 files keytool and JSSE read."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tdwii_cli.errors import TdwiiError
from tdwii_cli.pki.certs import common_name
from tdwii_cli.pki.keys import PrivateKey

DEFAULT_P12_PASSWORD = "secret"  # dcm4che's default store password


def keystore_p12(
    name: str,
    key: PrivateKey,
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    password: str = DEFAULT_P12_PASSWORD,
) -> bytes:
    """A PKCS#12 key store (Java `PrivateKeyEntry`): key, certificate and the CA."""
    if not password:
        raise TdwiiError("the PKCS#12 password must not be empty", hint="check --p12-password")
    return pkcs12.serialize_key_and_certificates(
        name.encode(),
        key,
        cert,
        [ca_cert],
        serialization.BestAvailableEncryption(password.encode()),
    )


def truststore_p12(
    ca_certs: Sequence[x509.Certificate], password: str = DEFAULT_P12_PASSWORD
) -> bytes:
    """A Java trust store: certificate bags with Oracle's trusted-key-usage attribute."""
    if not password:
        raise TdwiiError("the PKCS#12 password must not be empty", hint="check --p12-password")
    bags = []
    for i, cert in enumerate(ca_certs):
        alias = common_name(cert) or f"ca{i}"
        bags.append(pkcs12.PKCS12Certificate(cert, alias.lower().encode()))
    return pkcs12.serialize_java_truststore(
        bags, serialization.BestAvailableEncryption(password.encode())
    )
