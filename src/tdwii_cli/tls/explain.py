"""The true cause of a failed handshake, from what we know of our own side.

OpenSSL's alert says "protocol version", "handshake failure" or "certificate expired";
our context knows more: the versions and suites our profile allows, our key type, the
validity of our certificate, and (on a server) the client's ClientHello. `refine()`
rewrites a `HandshakeFailure` with those facts.
"""

from __future__ import annotations

import ssl

from tdwii_cli.clock import utc_now
from tdwii_cli.tls.context import Context, key_type_problem
from tdwii_cli.tls.diagnosis import HandshakeFailure, Side
from tdwii_cli.tls.transcript import TLS13, Hello

_VERSIONS = {
    ssl.TLSVersion.TLSv1_2: 0x0303,
    ssl.TLSVersion.TLSv1_3: TLS13,
    ssl.TLSVersion.MINIMUM_SUPPORTED: 0x0303,  # we never go below TLS 1.2
    ssl.TLSVersion.MAXIMUM_SUPPORTED: TLS13,
}
_BOTH_KEYS = "bcp195-rfc8996 or bcp195-ex"


def _our_versions(ctx: ssl.SSLContext) -> tuple[int, int]:
    return _VERSIONS.get(ctx.minimum_version, 0x0303), _VERSIONS.get(ctx.maximum_version, TLS13)


def _version_words(low: int, high: int) -> str:
    return "TLS 1.2 only" if high < TLS13 else "TLS 1.3 only" if low >= TLS13 else "TLS 1.2 and 1.3"


def refine(
    failure: HandshakeFailure, side: Side, ctx: ssl.SSLContext, hello: Hello | None
) -> HandshakeFailure:
    """`failure` in the words our side's facts support (unchanged when they add nothing)."""
    if not isinstance(ctx, Context):
        return failure
    if failure.cause == "protocol-version":
        return _versions(side, ctx, hello)
    if failure.cause == "no-shared-cipher":
        return _suites(failure, side, ctx, hello)
    if failure.cause == "our-certificate-expired":
        return _expired(failure, ctx)
    return failure


def _versions(side: Side, ctx: Context, hello: Hello | None) -> HandshakeFailure:
    low, high = _our_versions(ctx)
    ours = f"we allow {_version_words(low, high)} (profile {ctx.profile.name})"
    peer = "the client" if side == "server" else "the server"
    if hello is not None:
        theirs = f"{peer} offers {hello.version_words}"
        newer = any(v > high for v in hello.versions if v <= TLS13)
    elif high < TLS13:
        theirs = f"{peer} refuses it, so it allows only TLS 1.3 (or only versions before 1.2)"
        newer = True
    else:
        theirs = f"{peer} allows neither, only versions before TLS 1.2"
        newer = False
    reason = f"protocol version refused: no TLS version in common: {ours}; {theirs}"
    if newer:
        advice = "use a profile that allows TLS 1.3: bcp195-rfc8996 (the default) or bcp195-nd"
    else:
        advice = f"upgrade {peer} to TLS 1.2 or 1.3 (TLS 1.0 and 1.1 are never allowed)"
    return HandshakeFailure("protocol-version", reason, advice)


def _tls12_suites(ctx: ssl.SSLContext) -> dict[int, str]:
    """Our TLS 1.2 suites: id -> 'rsa' or 'ecdsa' (their authentication)."""
    out = {}
    for suite in ctx.get_ciphers():
        if suite.get("protocol") == "TLSv1.2":
            out[int(suite["id"]) & 0xFFFF] = "ecdsa" if "ecdsa" in suite.get("auth", "") else "rsa"
    return out


def _suites(
    failure: HandshakeFailure, side: Side, ctx: Context, hello: Hello | None
) -> HandshakeFailure:
    profile = ctx.profile.name
    ours = _tls12_suites(ctx)
    own_key = ctx.own.key_type if ctx.own else ""
    if side == "server":
        problem = key_type_problem(profile, own_key)
        if problem:
            return HandshakeFailure(
                "key-type-mismatch",
                f"no shared cipher suite: our key does not suit the profile: {problem}",
                f"use profile {_BOTH_KEYS} with this certificate, or an RSA certificate",
            )
        if hello is None:
            return failure
        shared = {ours[c] for c in hello.ciphers if c in ours}
        if not shared:
            return HandshakeFailure(
                "no-shared-cipher",
                f"no shared cipher suite: the client offers none of profile {profile}'s "
                "TLS 1.2 suites and no TLS 1.3",
                "the client needs TLS 1.3 or ECDHE suites with AES-GCM (RFC 9325)",
            )
        need = "EC" if shared == {"ecdsa"} else "RSA"
        return HandshakeFailure(
            "key-type-mismatch",
            f"no shared cipher suite: the suites we share with the client need an {need} "
            f"certificate, and ours has an {own_key} key",
            f"give the server an {need} certificate, or the client suites for an {own_key} key",
        )
    kinds = set(ours.values())
    if kinds == {"rsa"}:
        return HandshakeFailure(
            "key-type-mismatch",
            f"no shared cipher suite: profile {profile} offers only RSA suites for TLS 1.2, so "
            "a TLS 1.2 server with an EC certificate shares none with us",
            f"use profile {_BOTH_KEYS}, which has suites for both key types",
        )
    return HandshakeFailure(
        "no-shared-cipher",
        "no shared cipher suite: we offer the RFC 9325 suites for RSA and EC keys, and the "
        "server takes none of them: it lacks them, or its key does not suit its own suites "
        "(an EC certificate with only RSA suites, as profile bcp195-nd has)",
        f"the server needs suites that suit its key: {_BOTH_KEYS} on a tdwii server",
    )


def _expired(failure: HandshakeFailure, ctx: Context) -> HandshakeFailure:
    own = ctx.own
    if own is None or own.not_after <= utc_now():
        return failure
    return HandshakeFailure(
        "peer-crl-expired",
        "the peer refused us with 'certificate expired', but our certificate is valid until "
        f"{own.not_after:%Y-%m-%d}: the CRL it checks us against has probably passed its next "
        "update (or its clock is wrong)",
        "the peer's administrator must issue a fresh CRL (tdwii pki crl) or fix its clock",
    )
