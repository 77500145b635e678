"""SSL contexts for the secure transport connection profiles of PS3.15 Annex B.

BCP 195, RFC 8996 and RFC 9325: TLS 1.0 and 1.1 are never negotiated; the server
picks the cipher; no renegotiation, no compression; ALPN "dicom". `set_ciphers`
governs TLS 1.2 only (TLS 1.3 uses OpenSSL's three AEAD suites).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from tdwii_cli.errors import TdwiiError
from tdwii_cli.tls.options import ProfileName, TlsOptions
from tdwii_cli.tls.owncert import OwnCertificate, check_own_certificate, load_pair

log = logging.getLogger("tdwii.tls")

ALPN = "dicom"

_RFC9325 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)
_ND = (
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
)
_EX = _ND + ":ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"


@dataclass(frozen=True)
class Profile:
    """A secure transport connection profile: the highest TLS version and the TLS 1.2 suites."""

    name: ProfileName
    ciphers: str
    maximum: ssl.TLSVersion


PROFILES: dict[str, Profile] = {
    "bcp195-rfc8996": Profile("bcp195-rfc8996", _RFC9325, ssl.TLSVersion.TLSv1_3),
    "bcp195-nd": Profile("bcp195-nd", _ND, ssl.TLSVersion.TLSv1_3),
    "bcp195-ex": Profile("bcp195-ex", _EX, ssl.TLSVersion.TLSv1_2),
}


class Context(ssl.SSLContext):
    """An `ssl.SSLContext` that remembers its profile and what our certificate is, so that a
    failed handshake can be explained with both (see `tdwii_cli.tls.diagnosis`)."""

    profile: Profile
    own: OwnCertificate | None = None
    # A server's twin, the same set-up without the transcript: a socket is moved onto it
    # once its handshake is done, so that OpenSSL stops calling into Python per record.
    after_handshake: Context | None = None


def key_type_problem(profile: ProfileName, key_type: str) -> str:
    """Why a server with a `key_type` key cannot accept TLS 1.2 clients under `profile`
    ('' when it can): `bcp195-nd`'s TLS 1.2 suites are ECDHE-RSA and DHE-RSA only."""
    if profile == "bcp195-nd" and key_type == "EC":
        return (
            "profile bcp195-nd has only RSA suites for TLS 1.2, so with an EC certificate "
            "only TLS 1.3 clients can connect (bcp195-rfc8996 or bcp195-ex take TLS 1.2 "
            "clients with an EC key)"
        )
    return ""


def _base_context(
    purpose: ssl._SSLMethod, opts: TlsOptions, checked: OwnCertificate | None = None
) -> Context:
    """A context of `opts`' profile, CA, CRL and pair; `checked`: our pair was checked for
    another context already (a server's twin), so it is only loaded, not checked again."""
    profile = PROFILES[opts.profile]
    ctx = Context(purpose)
    ctx.profile = profile
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = profile.maximum
    ctx.set_ciphers(profile.ciphers)
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    for ca in opts.ca:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError):
            raise TdwiiError(
                f"CA file {ca} holds no usable PEM certificate", hint="pass the CA's .pem"
            ) from None
    if opts.crl is not None:
        try:
            ctx.load_verify_locations(cafile=str(opts.crl))
        except (ssl.SSLError, OSError):
            raise TdwiiError(f"CRL file {opts.crl} is not a PEM CRL") from None
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if opts.cert is not None and opts.key is not None:
        # servers and mTLS clients always; a --tls client only when it was given a pair
        if checked is None:
            ctx.own = check_own_certificate(opts.cert, opts.key, opts.key_password(), ctx)
        else:
            load_pair(ctx, opts.cert, opts.key, opts.key_password())
            ctx.own = checked
    return ctx


def build_server_context(opts: TlsOptions, num_tickets: int | None = None) -> Context:
    """Server context: server cipher preference; client certificate required for mTLS; the
    peer's hello and certificate recorded (`tdwii_cli.tls.transcript`) for the log during
    the handshake, and `after_handshake` the same context without that recording (move a
    socket there with `quiet_after_handshake`). `num_tickets`: TLS 1.3 tickets to send."""
    from tdwii_cli.tls.transcript import record

    ctx = _server_core(opts, num_tickets)
    ctx.after_handshake = _server_core(opts, num_tickets, checked=ctx.own)
    record(ctx)
    return ctx


def _server_core(
    opts: TlsOptions, num_tickets: int | None, checked: OwnCertificate | None = None
) -> Context:
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, opts, checked)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.verify_mode = ssl.CERT_REQUIRED if opts.mutual else ssl.CERT_NONE
    # Selects "dicom" when offered; a client offering no ALPN (or others only) goes on without.
    ctx.set_alpn_protocols([ALPN])
    if num_tickets is not None:
        ctx.num_tickets = num_tickets
    return ctx


def quiet_after_handshake(sock: ssl.SSLSocket) -> None:
    """Move `sock`, its handshake done, onto its context's twin without the transcript (the
    same certificate, key and trust: only OpenSSL's message callback is gone)."""
    twin = getattr(sock.context, "after_handshake", None)
    if twin is not None:
        sock.context = twin


def build_client_context(opts: TlsOptions, alpn: str | None = ALPN) -> Context:
    """Client context: verify the server (and its host name unless turned off), offer ALPN
    `alpn` ("dicom"; None for a peer that is no DICOM node, a syslog receiver say)."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, opts)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = opts.verify_hostname
    if not opts.verify_hostname:
        log.warning("server host name check is off")
    if alpn is not None:
        ctx.set_alpn_protocols([alpn])
    return ctx
