"""What a person should change, added to the one-line errors of the command line.

The network layers raise typed errors that say what happened
(`tdwii_cli.net.errors`); the words naming options (-ta, --mtls, --ca, ...) are
added only here, so that the server's log, which sees the same errors, never
asks anyone to change an option.
"""

from __future__ import annotations

from tdwii_cli.dicom.uids import uid_name
from tdwii_cli.errors import TdwiiError
from tdwii_cli.net import errors as net

# TLS handshake failures seen by a client, by `HandshakeFailure.cause`
_TLS_HINTS = {
    "self-signed": "pass its CA with --ca",
    "untrusted-ca": "pass the CA that issued it with --ca",
    "untrusted-root": "pass the CA that issued it with --ca",
    "no-crl": "pass the CA's CRL with --crl",
    "hostname-mismatch": "connect by a name in its SANs, or --no-verify-hostname",
    "no-client-certificate": "use --mtls (with --cert/--key), not --tls",
    "certificate-required": "use --mtls (with --cert/--key), not --tls",
    "not-tls": "use --mtls/--tls on both sides, or neither; TLS is usually on port 2762",
    "verify-failed": "check the CA (--ca) and the certificate",
    "unknown": "run with -d for details",
}


def hint_for(exc: TdwiiError) -> str:
    """The hint to print after `exc`'s message ('' when there is nothing to add)."""
    exc = getattr(exc, "cause", None) or exc  # an interrupted batch: the error that stopped it
    if exc.hint:
        return exc.hint
    if isinstance(exc, net.Unresolvable):
        return "check the name, or give an IP address"
    if isinstance(exc, net.Unreachable):
        return "is the server running, and are the host and port right?"
    if isinstance(exc, net.HandshakeFailed):
        failure = exc.failure
        if "profile" in failure.advice:  # diagnosis names profiles, not options
            return f"{failure.advice} (--tls-profile)"
        return _TLS_HINTS.get(failure.cause, failure.advice)
    if isinstance(exc, net.ClosedBeforeAnswer):
        if exc.tls:
            return "is it a DICOM node on this port? the server's log says why it closed"
        return "does the server expect TLS (--mtls/--tls)? see its log"
    if isinstance(exc, net.AssociationRejected):
        if "calling AE title not recognised" in exc.message:
            return (
                "the server does not take this -aet from our certificate: call as the AE "
                "title it is bound to (tdwii pki show CERT --ae-config FILE), or bind it "
                "(tdwii pki issue ... --ae-title)"
            )
        return "check -aec/-aet and the server's limits"
    if isinstance(exc, net.ContextRefused):
        return f"the peer does not offer {uid_name(exc.abstract_syntax)} as an SCP"
    if isinstance(exc, net.PeerTimeout):
        return "raise -ta/-td, or check the server"
    if isinstance(exc, net.AssociationAborted):
        return "see the server's log" if exc.tls else "does the server expect TLS (--mtls)?"
    if isinstance(exc, net.ProtocolViolation):
        return "is it a DICOM node, and does it expect TLS?"
    if isinstance(exc, net.ConnectionLost):
        return "see the server's log"
    return ""
