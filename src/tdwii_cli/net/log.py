"""The connection log shared by clients and server: TLS handshakes, associations, DIMSE lines.

Lines go to the `tdwii.net` logger. Handshake successes and associations show at
INFO (`-v`), the peer's whole certificate at DEBUG (a record that carries it as
`record.certificate`, which the console may render as a table); failures always,
as warnings. Nothing the peer sent reaches a line unescaped.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tdwii_cli.dicom.status import format_status
from tdwii_cli.dicom.uids import full_uid_name, uid_name
from tdwii_cli.net.dimse import C_CANCEL_RQ, Command

if TYPE_CHECKING:
    from tdwii_cli.net.floodlog import FloodLog
    from tdwii_cli.tls.diagnosis import HandshakeFailure, Side

log = logging.getLogger("tdwii.net")


def printable(text: object) -> str:
    """`text` with control characters (and backslashes) escaped, for a log line."""
    value = str(text)
    if value.isprintable() and "\\" not in value:
        return value
    return value.encode("unicode_escape").decode("ascii")


def who(peer: str, subject_cn: str | None) -> str:
    """`peer`, with the common name of its certificate when it presented one."""
    return f"{peer} ({printable(subject_cn)})" if subject_cn else peer


def handshake_ok(peer: str, sock: ssl.SSLSocket) -> None:
    """Peer, TLS version and cipher, and the peer certificate in short (in full at DEBUG)."""
    if not log.isEnabledFor(logging.INFO):
        return
    cipher = sock.cipher()
    der = sock.getpeercert(binary_form=True)
    alpn = sock.selected_alpn_protocol()
    line = f"{peer}: TLS handshake ok, {sock.version()} {cipher[0] if cipher else '?'}"
    if alpn:
        line += f", ALPN {printable(alpn)}"
    if not der:
        log.info("%s; the peer presented no certificate", line)
        return
    from tdwii_cli.tls.certinfo import cert_info, one_line

    info = cert_info(der)
    log.info("%s; peer certificate %s", line, printable(one_line(info)))
    log.debug(
        "%s: peer certificate subject=%s issuer=%s sans=%s sha256=%s",
        peer,
        printable(info.subject),
        printable(info.issuer),
        printable(",".join(info.sans)),
        info.sha256,
        extra={"certificate": info, "title": f"peer certificate of {peer}"},
    )


def handshake_failed(
    peer: str,
    exc: BaseException,
    side: Side = "server",
    sock: ssl.SSLSocket | None = None,
    flood: FloodLog | None = None,
) -> HandshakeFailure:
    """One warning line: peer (with the CN of the certificate it presented, even a refused
    one), the reason in plain words and what to do; `sock` gives our side's facts; through
    `flood` (a server's), repeated failures from one network are summarized. Returns the
    failure described."""
    from tdwii_cli.tls.diagnosis import describe_handshake_error
    from tdwii_cli.tls.transcript import client_hello, peer_subject_cn

    context = sock.context if sock is not None else None
    hello = client_hello(sock) if sock is not None and side == "server" else None
    failure = describe_handshake_error(exc, side=side, context=context, hello=hello)
    cn = peer_subject_cn(sock) if sock is not None else None
    line = ("%s: TLS handshake failed: %s (%s)", who(peer, cn), failure.reason, failure.advice)
    if flood is not None:
        flood.warning(f"failed their TLS handshake ({failure.cause})", peer, *line)
    else:
        log.warning(*line)
    log.debug("%s: handshake error detail: %r", peer, exc)
    return failure


def association_accepted(
    peer: str,
    calling: str,
    called: str,
    peer_max_pdu: int,
    accepted: Iterable[tuple[str, str]],
    rejected: Iterable[tuple[str, str]] = (),
) -> None:
    """The association line, then one line per accepted and per rejected context."""
    if not log.isEnabledFor(logging.INFO):
        return
    log.info(
        "%s: association accepted, %s -> %s, peer max PDU %s",
        peer,
        printable(calling),
        printable(called),
        peer_max_pdu or "unlimited",
    )
    for abstract, syntax in accepted:
        log.info("  accepted  %s  %s", uid_name(abstract), uid_name(syntax))
    for abstract, why in rejected:
        log.info("  rejected  %s  (%s)", printable(full_uid_name(abstract)), why or "rejected")


def association_rejected(peer: str, detail: str = "") -> None:
    log.warning("%s: association rejected%s", peer, f": {detail}" if detail else "")


def association_released(peer: str) -> None:
    log.info("%s: association released", peer)


def association_aborted(peer: str, *, nothing_accepted: bool = False) -> None:
    """The peer's A-ABORT: a warning, unless we had accepted none of its contexts (then
    giving up is the normal thing for it to do)."""
    if nothing_accepted:
        log.info("%s: association aborted by the peer: we accepted none of its contexts", peer)
    else:
        log.warning("%s: association aborted", peer)


def dimse_line(peer: str, direction: str, command: Command, took_ms: float | None = None) -> None:
    """One INFO line for a DIMSE message `direction` ("sent"/"received") on `peer`'s
    association; a response also shows its status and, when known, its round trip."""
    if not log.isEnabledFor(logging.INFO):
        return
    if command.field == C_CANCEL_RQ:  # names the request it cancels, has no ID of its own
        log.info("%s: %s %s of id=%s", peer, direction, command.name, command.responding_to)
        return
    if not command.is_response:
        uid = f" uid={printable(command.sop_instance)}" if command.sop_instance else ""
        log.info("%s: %s %s id=%s%s", peer, direction, command.name, command.message_id, uid)
        return
    operation = command.name.removesuffix("-RSP")  # a status out of place is named so
    status = format_status(command.status, operation) if command.status is not None else "no status"
    took = f" in {took_ms:.1f} ms" if took_ms is not None else ""
    log.info(
        "%s: %s %s id=%s status %s%s",
        peer,
        direction,
        command.name,
        command.responding_to,
        status,
        took,
    )
