"""Private keys: which kind to make (EC P-256 or RSA), generate, PEM in and out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import KEY_MODE, read_bytes, write_atomic
from tdwii_cli.pki.policy import MIN_RSA_BITS

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]  # noqa: UP007


@dataclass(frozen=True)
class KeySpec:
    """Which key to generate: EC P-256 (default) or RSA with `rsa_bits` (>= 2048)."""

    kind: Literal["ec", "rsa"] = "ec"
    rsa_bits: int = 2048

    def __post_init__(self) -> None:
        if self.kind not in ("ec", "rsa"):
            raise TdwiiError(f"unknown key type {self.kind!r}", hint="use ec or rsa")
        if self.kind == "rsa" and self.rsa_bits < MIN_RSA_BITS:
            raise TdwiiError(
                f"RSA keys of {self.rsa_bits} bits are too weak",
                hint=f"use at least {MIN_RSA_BITS} bits (2048, 3072 or 4096)",
            )

    def describe(self) -> str:
        return "EC P-256" if self.kind == "ec" else f"RSA {self.rsa_bits}"


def generate_key(spec: KeySpec | None = None) -> PrivateKey:
    """A new private key as `spec` says (EC P-256 by default)."""
    spec = spec or KeySpec()
    if spec.kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=spec.rsa_bits)


def public_bytes(key: PrivateKey | x509.Certificate) -> bytes:
    """The DER SubjectPublicKeyInfo of a key or certificate (to compare them)."""
    pub = key.public_key()
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """The signature hash that matches the key's strength (SHA-256 up to P-256 and RSA)."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 384:
        return hashes.SHA512()
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted (best available) when `password` is given."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def write_key(path: Path | str, key: PrivateKey, password: bytes | None = None) -> None:
    """Write a private key as PEM, atomically, created 0600."""
    write_atomic(Path(path), key_pem(key, password), KEY_MODE)


def read_file(path: Path, what: str) -> bytes:
    """The bytes of `path`; one-line errors naming `what` it should be."""
    return read_bytes(path, what)


def load_key(path: Path | str, password: bytes | None = None) -> PrivateKey:
    """A PEM (or DER) private key; clear errors for a wrong/missing password or a non-key."""
    path = Path(path)
    data = read_file(path, "private key")
    encrypted = b"ENCRYPTED" in data or b"Proc-Type: 4,ENCRYPTED" in data
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=password or None)
        else:
            key = serialization.load_der_private_key(data, password=password or None)
    except TypeError:
        if encrypted or not password:
            raise TdwiiError(
                f"private key {path} is encrypted", hint="give its password file"
            ) from None
        raise TdwiiError(
            f"private key {path} is not encrypted but a password was given",
            hint="drop the password file option",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if encrypted:
            raise TdwiiError(
                f"wrong password for private key {path}", hint="check the password file"
            ) from None
        raise TdwiiError(
            f"{path} is not a private key", hint="expected a PEM private key"
        ) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise TdwiiError(f"private key {path} is neither EC nor RSA", hint="tdwii uses EC or RSA")
    return key
