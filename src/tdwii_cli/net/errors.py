"""Why talking to a peer failed, as typed errors that carry the reason and the exit code.

Two branches under the project's `TdwiiError`:

- `UpperLayerError`: what the sans-IO upper layer (`tdwii_cli.net.upper`) and its socket
  adapters (`tdwii_cli.net.channel`) raise, knowing nothing of the peer's address: a
  `PeerViolation` (with the A-ABORT to send), `PeerAborted`, `PeerClosed`,
  `DeadlineMissed`.
- `NetError`: what a client command meets, with the peer's address and the exit code
  (`tdwii_cli.net.association` translates the first into these).

They say what happened, to whom; what a person should change (which option) is
not said here: `tdwii_cli.cli.hints` adds that on the command line, so the
server's log, which uses the same errors, never tells anyone to change an option.
"""

from __future__ import annotations

from tdwii_cli import exitcodes
from tdwii_cli.dicom.uids import uid_name
from tdwii_cli.errors import TdwiiError
from tdwii_cli.tls.diagnosis import HandshakeFailure

# A-ABORT source 2 (service provider) reasons, PS3.8 table 9-26
ABORT_NOT_SPECIFIED = 0
ABORT_UNRECOGNIZED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_UNRECOGNIZED_PARAMETER = 4
ABORT_UNEXPECTED_PARAMETER = 5
ABORT_INVALID_PARAMETER = 6


class UpperLayerError(TdwiiError):
    """The DICOM upper layer protocol (PS3.8) did not go as it must."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exitcodes.ASSOC_ABORTED)


class PeerViolation(UpperLayerError):
    """The peer broke the protocol; `abort` is the A-ABORT PDU to send it (source: service
    provider, `reason` from PS3.8 table 9-26) before closing."""

    def __init__(self, message: str, reason: int = ABORT_UNEXPECTED_PDU) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def abort(self) -> bytes:
        return bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 2, self.reason))


class PeerAborted(UpperLayerError):
    """An A-ABORT PDU really received (the peer speaks DICOM to us, over TLS if any)."""

    def __init__(self, source: int = 0, reason: int = 0) -> None:
        self.source, self.reason = source, reason
        super().__init__(f"A-ABORT from {_ABORT_SOURCES.get(source, 'the peer')}")


_ABORT_SOURCES = {0: "the peer (service user)", 1: "reserved", 2: "the peer (service provider)"}


class PeerClosed(UpperLayerError):
    """The peer closed the connection without an A-ABORT (or reset it)."""

    def __init__(self, message: str = "the peer closed the connection") -> None:
        super().__init__(message)


class DeadlineMissed(UpperLayerError, TimeoutError):
    """What we waited for did not come whole in time; `stage` says what ("idle", "PDU",
    "send", ...)."""

    def __init__(self, stage: str, seconds: float) -> None:
        self.stage, self.seconds = stage, seconds
        super().__init__(f"{stage} deadline of {seconds:g} s passed")


class NetError(TdwiiError):
    """A connection or association with `peer` failed (`message` says how)."""

    def __init__(self, peer: str, message: str, exit_code: int, *, tls: bool = False) -> None:
        super().__init__(message, exit_code)
        self.peer = peer
        self.tls = tls


class Unreachable(NetError):
    """No TCP connection: refused, no route, the connect timed out (60)."""

    def __init__(self, peer: str, words: str) -> None:
        super().__init__(peer, f"cannot reach {peer}: {words}", exitcodes.UNREACHABLE)


class Unresolvable(Unreachable):
    """The host name does not resolve (60): no address to connect to at all."""

    def __init__(self, peer: str, host: str) -> None:
        NetError.__init__(
            self,
            peer,
            f"cannot reach {peer}: the host name {host!r} does not resolve",
            exitcodes.UNREACHABLE,
        )


class HandshakeFailed(NetError):
    """The TLS handshake failed (63); `failure` says why."""

    def __init__(self, peer: str, failure: HandshakeFailure) -> None:
        message = f"TLS handshake with {peer} failed: {failure.reason}"
        super().__init__(peer, message, exitcodes.TLS_HANDSHAKE, tls=True)
        self.failure = failure


def closed_after_handshake(peer: str, mutual: bool) -> HandshakeFailed:
    """The server hung up right after a TLS 1.3 handshake that looked fine to us: in TLS 1.3
    the verdict on our certificate comes after our side of the handshake is done."""
    if mutual:
        failure = HandshakeFailure(
            "refused-our-certificate",
            "the server closed the connection right after the TLS 1.3 handshake: most likely "
            "it did not accept our certificate",
            "is our certificate from a trusted CA, and not revoked? the server's log says why",
        )
    else:
        failure = HandshakeFailure(
            "certificate-required",
            "the server closed the connection right after the handshake: it requires a client "
            "certificate and we presented none",
            "present a client certificate (mutual TLS)",
        )
    return HandshakeFailed(peer, failure)


class ClosedBeforeAnswer(NetError):
    """The peer hung up on our A-ASSOCIATE-RQ without a word (62): often TLS against plain;
    over TLS 1.2, after a handshake that accepted our certificate."""

    def __init__(self, peer: str, *, tls: bool) -> None:
        message = f"{peer} closed the connection without answering the association request"
        if tls:
            message += " (the TLS handshake had succeeded)"
        super().__init__(peer, message, exitcodes.ASSOC_ABORTED, tls=tls)


class AssociationRejected(NetError):
    """A-ASSOCIATE-RJ (61), with the standard's result, source and reason."""

    def __init__(self, peer: str, called: str, words: str) -> None:
        super().__init__(
            peer, f"association rejected by {called}@{peer}: {words}", exitcodes.ASSOC_REJECTED
        )


class ContextRefused(NetError):
    """The peer accepted the association but not the presentation context we need (61)."""

    def __init__(self, peer: str, called: str, abstract_syntax: str) -> None:
        self.abstract_syntax = abstract_syntax
        super().__init__(
            peer,
            f"{called}@{peer} refused the {uid_name(abstract_syntax)} context",
            exitcodes.ASSOC_REJECTED,
        )


class PeerTimeout(NetError):
    """No answer within the ACSE or DIMSE timeout (62)."""

    def __init__(self, peer: str) -> None:
        super().__init__(peer, f"{peer} did not answer in time", exitcodes.ASSOC_ABORTED)


class AssociationAborted(NetError):
    """The peer sent A-ABORT, or closed the connection, in the middle of an association (62)."""

    def __init__(self, peer: str, detail: str, *, tls: bool) -> None:
        super().__init__(
            peer, f"{peer}: association aborted: {detail}", exitcodes.ASSOC_ABORTED, tls=tls
        )


class ProtocolViolation(NetError):
    """The peer broke the upper layer or DIMSE protocol, or is not a DICOM node (62)."""

    def __init__(self, peer: str, detail: str) -> None:
        super().__init__(peer, f"{peer}: {detail}", exitcodes.ASSOC_ABORTED)


class ConnectionLost(NetError):
    """The connection failed under us (62)."""

    def __init__(self, peer: str, detail: str) -> None:
        super().__init__(peer, f"{peer}: connection lost: {detail}", exitcodes.ASSOC_ABORTED)
