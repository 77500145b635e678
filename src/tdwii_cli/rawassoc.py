"""A client association on plain sockets and `ssl`: connect, associate, release, one-line errors.

`tdwii echo` and `tdwii create-workitem` speak DIMSE through `dulraw` instead of
pynetdicom: no reactor threads that poll every millisecond, so a request costs
the peer's time plus microseconds (pynetdicom's client adds about 6 ms to each
N-CREATE). `open_association` connects (TCP_NODELAY, TLS with our context),
sends the A-ASSOCIATE-RQ for one abstract syntax, yields a `RawAssociation`,
releases it when the body is done, and turns whatever goes wrong on the way
(refusal, timeout, abort, TLS verdicts that come late in TLS 1.3, a peer that
is not DICOM) into a `TdwiiError` with the tool's exit codes.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tdwii_cli import dulraw, exitcodes
from tdwii_cli.errors import TdwiiError
from tdwii_cli.netlog import uid_name
from tdwii_cli.scuoptions import ScuOptions

log = logging.getLogger("tdwii.net")


@dataclass
class RawAssociation:
    """An established association: its socket, what the peer accepted, and the TLS session."""

    sock: socket.socket
    peer: str
    accepted: dulraw.Accepted
    abstract_syntax: str
    context_id: int
    transfer_syntax: str

    @property
    def max_pdu(self) -> int:
        """The longest P-DATA-TF the peer takes (0: no limit)."""
        return self.accepted.max_pdu

    @property
    def tls_version(self) -> str:
        return (self.sock.version() or "") if isinstance(self.sock, ssl.SSLSocket) else ""

    @property
    def cipher(self) -> str:
        if not isinstance(self.sock, ssl.SSLSocket):
            return ""
        return (self.sock.cipher() or ("",))[0]


def connect(host: str, port: int, ctx: ssl.SSLContext | None, net: ScuOptions) -> socket.socket:
    """TCP (+ TLS) connection with TCP_NODELAY; 60 unreachable, 63 handshake failed."""
    from tdwii_cli import tls as tlsmod

    peer = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=net.connect_timeout)
    except OSError as exc:
        words = (
            "connection timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        )
        raise TdwiiError(
            f"cannot reach {peer}: {words}",
            exitcodes.UNREACHABLE,
            hint="is the server running, and are the host and port right?",
        ) from None
    tlsmod.set_nodelay(raw)
    if ctx is None:
        raw.settimeout(net.acse_timeout)
        return raw
    try:
        sock = ctx.wrap_socket(raw, server_hostname=host)  # handshake within -to
    except OSError as exc:
        raw.close()
        raise tlsmod.handshake_error(peer, exc, side="client") from None
    from tdwii_cli.netlog import log_handshake_ok

    log_handshake_ok(peer, sock)
    sock.settimeout(net.acse_timeout)
    return sock


def _refused_after_handshake(peer: str, mutual: bool) -> TdwiiError:
    if mutual:
        return TdwiiError(
            f"TLS handshake with {peer} failed: the server closed the connection right after "
            "the handshake: it did not accept our certificate",
            exitcodes.TLS_HANDSHAKE,
            hint="is our certificate from a trusted CA, and not revoked? the server's log says why",
        )
    return TdwiiError(
        f"TLS handshake with {peer} failed: the server closed the connection right after the "
        "handshake: it requires a client certificate and we presented none",
        exitcodes.TLS_HANDSHAKE,
        hint="use --mtls (with --cert/--key), not --tls",
    )


def _request(
    sock: socket.socket,
    peer: str,
    net: ScuOptions,
    abstract: str,
    transfer_syntaxes: tuple[str, ...],
    separate: bool,
    tls_on: bool,
    mutual: bool,
) -> dulraw.Accepted:
    """A-ASSOCIATE-RQ/AC, with the errors only this first exchange can tell apart."""
    from tdwii_cli import tls as tlsmod

    if log.isEnabledFor(logging.DEBUG):
        offered = ", ".join(uid_name(ts) for ts in transfer_syntaxes)
        log.debug(
            "%s: A-ASSOCIATE-RQ %s -> %s, %s with %s (%s), our max PDU %d",
            peer,
            net.calling_aet,
            net.called_aet,
            uid_name(abstract),
            offered,
            "a context each" if separate else "one context",
            dulraw.MAX_PDU,
        )
    try:
        return dulraw.request_association(
            sock, net.calling_aet, net.called_aet, abstract, transfer_syntaxes, separate
        )
    except ssl.SSLError as exc:
        if not isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            raise tlsmod.handshake_error(peer, exc, side="client") from None
        raise _refused_after_handshake(peer, mutual) from None
    except (TimeoutError, dulraw.AbortPdu):
        # no answer, or an A-ABORT over an established TLS session (so our certificate
        # was accepted): "did not answer in time" / "association aborted" (62)
        raise
    except (dulraw.Aborted, OSError) as exc:
        if not tls_on:
            # a TLS server reads our A-ASSOCIATE-RQ as a broken ClientHello and hangs up
            raise TdwiiError(
                f"{peer} closed the connection before answering the association request",
                exitcodes.ASSOC_ABORTED,
                hint="does the server expect TLS (--mtls/--tls)? see its log",
            ) from None
        # TLS 1.3: the server checks our certificate after our side of the handshake
        # is done; its alert is often lost when it closes on our unread request.
        raise _refused_after_handshake(peer, mutual) from exc
    except dulraw.Rejected as exc:
        raise TdwiiError(
            f"association rejected by {net.called_aet}@{peer}: {exc}",
            exitcodes.ASSOC_REJECTED,
            hint="check -aec/-aet and the server's limits",
        ) from None


@contextmanager
def open_association(
    host: str,
    port: int,
    ctx: ssl.SSLContext | None,
    net: ScuOptions,
    *,
    abstract: str = dulraw.VERIFICATION,
    transfer_syntaxes: tuple[str, ...] = dulraw.TRANSFER_SYNTAXES,
    separate: bool = False,
    mutual: bool = True,
) -> Iterator[RawAssociation]:
    """An association for `abstract`, released after the body; failures raise `TdwiiError`.

    With `separate`, each transfer syntax is proposed in a context of its own and
    the association uses the accepted one first in `transfer_syntaxes`.

    The socket's timeout is the DIMSE timeout inside the body (the ACSE timeout
    while associating and releasing). Errors raised by the body are translated
    too; a `TdwiiError` from the body passes through, and the connection is
    closed (without a release) on any failure.
    """
    from tdwii_cli import tls as tlsmod

    peer = f"{host}:{port}"
    sock = connect(host, port, ctx, net)
    established = False
    try:
        acc = _request(
            sock, peer, net, abstract, transfer_syntaxes, separate, ctx is not None, mutual
        )
        log.info(
            "%s: association accepted, %s -> %s, peer max PDU %s",
            peer,
            net.calling_aet,
            acc.called,
            acc.max_pdu or "unlimited",
        )
        chosen = acc.choose(transfer_syntaxes)
        if chosen is None:
            dulraw.release(sock)
            raise TdwiiError(
                f"{net.called_aet}@{peer} refused the {uid_name(abstract)} context",
                exitcodes.ASSOC_REJECTED,
                hint=f"the peer does not offer {uid_name(abstract)} as an SCP",
            )
        context_id, syntax = chosen
        log.info("  accepted  %s  %s", uid_name(abstract), uid_name(syntax))
        sock.settimeout(net.dimse_timeout)
        established = True
        yield RawAssociation(sock, peer, acc, abstract, context_id, syntax)
        sock.settimeout(net.acse_timeout)
        established = False
        dulraw.release(sock)
        log.info("%s: association released", peer)
    except TimeoutError:
        raise TdwiiError(
            f"{peer} did not answer in time",
            exitcodes.ASSOC_ABORTED,
            hint="raise -ta/-td, or check the server",
        ) from None
    except ssl.SSLError as exc:  # TLS 1.3: the server's verdict on our certificate comes late
        raise tlsmod.handshake_error(peer, exc, side="client") from None
    except dulraw.Aborted as exc:
        hint = "does the server expect TLS (--mtls)?" if ctx is None else "see the server's log"
        raise TdwiiError(
            f"{peer}: association aborted: {exc}", exitcodes.ASSOC_ABORTED, hint=hint
        ) from None
    except dulraw.ProtocolError as exc:
        raise TdwiiError(
            f"{peer}: {exc}",
            exitcodes.ASSOC_ABORTED,
            hint="is it a DICOM node, and does it expect TLS?",
        ) from None
    except OSError as exc:
        raise TdwiiError(
            f"{peer}: connection lost: {exc.strerror or exc}",
            exitcodes.ASSOC_ABORTED,
            hint="see the server's log",
        ) from None
    finally:
        if established:  # the body failed: tell the peer (PS3.8 A-ABORT) before closing
            _abort_quietly(sock)
        sock.close()


def _abort_quietly(sock: socket.socket) -> None:
    try:
        sock.settimeout(1.0)
        sock.sendall(dulraw.ABORT)
    except (OSError, ValueError):
        pass
