"""Checks on a client's certificate that OpenSSL's chain verification does not make.

OpenSSL accepts, for TLS client authentication, a leaf whose KeyUsage has
keyAgreement but not digitalSignature, and a leaf that is itself a CA
(BasicConstraints CA:TRUE) when the root issued it. RFC 5280 4.2.1.3 and 4.2.1.9 say
neither may sign a TLS handshake as an end entity; `unfit()` says why such a
certificate is refused, once the handshake is done.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1024)  # devices reconnect with the same certificate: parse it once
def unfit(der: bytes) -> str:
    """Why the end-entity certificate `der` may not authenticate a TLS peer ('' when fit)."""
    from cryptography import x509

    try:
        extensions = x509.load_der_x509_certificate(der).extensions
    except (ValueError, x509.DuplicateExtension):
        return "its certificate cannot be read"
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        pass
    else:
        if constraints.ca:
            return "its certificate is a CA certificate (BasicConstraints CA:TRUE), not a device's"
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ""  # no KeyUsage: any use (RFC 5280 4.2.1.3)
    if not usage.digital_signature:
        return (
            "its certificate's KeyUsage lacks digitalSignature, "
            "which TLS client authentication needs"
        )
    return ""
