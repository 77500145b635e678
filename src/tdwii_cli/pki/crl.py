"""Revocation: the CA's CRL, the revoked serials it is made from, reading CRLs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tdwii_cli.clock import utc_now
from tdwii_cli.errors import TdwiiError
from tdwii_cli.pki.certs import authority_key_id
from tdwii_cli.pki.keys import PrivateKey, hash_for, read_file
from tdwii_cli.pki.policy import BACKDATE, CRL_DAYS


def crl_pem(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Sequence[tuple[int, dt.datetime]],
    *,
    crl_number: int = 1,
    days: int = CRL_DAYS,
) -> bytes:
    """A PEM CRL signed by the CA listing `(serial, revocation time)` pairs."""
    now = utc_now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - BACKDATE)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(authority_key_id(ca_cert), critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca_key, hash_for(ca_key)).public_bytes(serialization.Encoding.PEM)


@dataclass
class RevocationState:
    """The revoked serials (kept in `rootCA/rootCA.revoked.json`) and the last CRL number."""

    crl_number: int = 0
    revoked: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RevocationState:
        if not path.exists():
            return cls()
        try:
            data = json.loads(read_file(path, "revocation list"))
            return cls(int(data.get("crl_number", 0)), list(data.get("revoked", [])))
        except (ValueError, TypeError, AttributeError):
            raise TdwiiError(
                f"{path} is damaged", hint="fix or remove it (its serials will be forgotten)"
            ) from None

    def to_bytes(self) -> bytes:
        return (
            json.dumps({"crl_number": self.crl_number, "revoked": self.revoked}, indent=2) + "\n"
        ).encode()

    def serials(self) -> set[int]:
        return {int(item["serial"], 16) for item in self.revoked}

    def entries(self) -> list[tuple[int, dt.datetime]]:
        return [
            (int(item["serial"], 16), dt.datetime.fromisoformat(item["revoked_at"]))
            for item in self.revoked
        ]


def current_crl_number(path: Path) -> int:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (OSError, ValueError, x509.ExtensionNotFound):
        return 0


def load_crl(path: Path | str) -> x509.CertificateRevocationList:
    """A PEM (or DER) CRL."""
    path = Path(path)
    data = read_file(path, "CRL")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise TdwiiError(f"{path} is not a CRL", hint="expected a PEM or DER X.509 CRL") from None
