"""The connection log shared by every subcommand: TLS handshakes, associations, DIMSE messages.

Lines go to the `tdwii.net` logger (stderr; rich on a terminal, plain when piped).
Handshake successes and associations show from `-v`; the full peer certificate
table from `-d`; failures always (as warnings).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any

log = logging.getLogger("tdwii.net")

_UID_NAMES = {
    "1.2.840.10008.1.1": "Verification",
    "1.2.840.10008.5.1.4.34.6.1": "UPS Push",
    "1.2.840.10008.5.1.4.34.6.2": "UPS Watch",
    "1.2.840.10008.5.1.4.34.6.3": "UPS Pull",
    "1.2.840.10008.5.1.4.34.6.4": "UPS Event",
    "1.2.840.10008.5.1.4.34.6.5": "UPS Query",
    "1.2.840.10008.1.2": "Implicit VR LE",
    "1.2.840.10008.1.2.1": "Explicit VR LE",
    "1.2.840.10008.1.2.2": "Explicit VR BE",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR LE",
}


def uid_name(uid: Any) -> str:
    """A short name for the UIDs tdwii negotiates (the UID itself otherwise)."""
    return _UID_NAMES.get(str(uid), str(uid))


def status_text(code: int) -> str:
    """The standard's words for a DIMSE status, from pynetdicom's tables."""
    from pynetdicom import status as st

    for table in (
        st.UNIFIED_PROCEDURE_STEP_SERVICE_CLASS_STATUS,
        st.GENERAL_STATUS,
        st.VERIFICATION_SERVICE_CLASS_STATUS,
    ):
        if code in table:
            category, words = table[code]
            return f"{category}: {words}" if words else category
    category = st.code_to_category(code)
    return category if category != st.STATUS_UNKNOWN else "Unknown status"


def format_status(code: int) -> str:
    """E.g. `0xC309 (Failure: The provided value of UPS State was not SCHEDULED)`."""
    return f"0x{code:04X} ({status_text(code)})"


# ---------------------------------------------------------------------- TLS handshakes


def log_handshake_ok(peer: str, sock: ssl.SSLSocket) -> None:
    """Peer, TLS version and cipher, and the peer certificate in short (full table at -d)."""
    if not log.isEnabledFor(logging.INFO):
        return
    cipher = sock.cipher()
    der = sock.getpeercert(binary_form=True)
    alpn = sock.selected_alpn_protocol()
    line = f"{peer}: TLS handshake ok, {sock.version()} {cipher[0] if cipher else '?'}"
    if alpn:
        line += f", ALPN {alpn}"
    if der:
        from tdwii_cli.certinfo import cert_info, one_line

        info = cert_info(der)
        log.info("%s; peer certificate %s", line, one_line(info))
        if log.isEnabledFor(logging.DEBUG):
            from tdwii_cli.certinfo import cert_table
            from tdwii_cli.console import stderr_console, stderr_is_terminal

            if stderr_is_terminal():
                stderr_console().print(cert_table(info, title=f"peer certificate of {peer}"))
            else:
                log.debug(
                    "%s: peer certificate subject=%s issuer=%s sans=%s sha256=%s",
                    peer,
                    info.subject,
                    info.issuer,
                    ",".join(info.sans),
                    info.sha256,
                )
    else:
        log.info("%s; the peer presented no certificate", line)


def log_handshake_failed(peer: str, exc: BaseException, side: str = "server") -> None:
    """One warning line: peer, the reason in plain words and a hint."""
    from tdwii_cli.tls import describe_handshake_error

    failure = describe_handshake_error(exc, side=side)
    log.warning("%s: TLS handshake failed: %s (%s)", peer, failure.reason, failure.hint)
    log.debug("%s: handshake error detail: %r", peer, exc)


# ---------------------------------------------------------------------- associations


def _who(assoc: Any) -> str:
    remote = assoc.remote
    addr = remote.get("address", "?")
    port = remote.get("port", "?")
    return f"{addr}:{port}"


def _on_accepted(event: Any) -> None:
    assoc = event.assoc
    req, acc = assoc.requestor, assoc.acceptor
    peer_max = (acc if assoc.is_requestor else req).maximum_length
    log.info(
        "%s: association accepted, %s -> %s, peer max PDU %s",
        _who(assoc),
        req.ae_title,
        acc.ae_title,
        peer_max or "unlimited",
    )
    for cx in assoc.accepted_contexts:
        log.info(
            "  accepted  %s  %s",
            uid_name(cx.abstract_syntax),
            uid_name(cx.transfer_syntax[0]) if cx.transfer_syntax else "",
        )
    for cx in assoc.rejected_contexts:
        log.info(
            "  rejected  %s  (%s)",
            uid_name(cx.abstract_syntax),
            getattr(cx, "status", None) or "rejected",
        )


def _on_rejected(event: Any) -> None:
    prim = event.assoc.acceptor.primitive
    detail = ""
    if prim is not None and getattr(prim, "result_str", None):
        detail = f": {prim.result_str}, {prim.source_str}, {prim.reason_str}"
    log.warning("%s: association rejected%s", _who(event.assoc), detail)


def _on_released(event: Any) -> None:
    log.info("%s: association released", _who(event.assoc))


def _on_aborted(event: Any) -> None:
    log.warning("%s: association aborted", _who(event.assoc))


_pending: dict[tuple[int, int], float] = {}
_pending_lock = threading.Lock()


def _message_line(event: Any, direction: str) -> None:
    msg = event.message
    name = type(msg).__name__.replace("_", "-")
    cmd = msg.command_set
    key_id = cmd.get("MessageIDBeingRespondedTo", None) if name.endswith("RSP") else None
    assoc_key = id(event.assoc)
    now = time.perf_counter()
    if name.startswith("C-CANCEL"):  # names the request it cancels, has no ID of its own
        cancels = cmd.get("MessageIDBeingRespondedTo", None)
        log.info("%s: %s %s of id=%s", _who(event.assoc), direction, name, cancels)
        return
    if key_id is None:  # a request: remember when it went or came
        mid = cmd.get("MessageID", None)
        with _pending_lock:
            _pending[(assoc_key, int(mid or 0))] = now
        uid = cmd.get("AffectedSOPInstanceUID", None) or cmd.get("RequestedSOPInstanceUID", "")
        log.info(
            "%s: %s %s id=%s%s",
            _who(event.assoc),
            direction,
            name,
            mid,
            f" uid={uid}" if uid else "",
        )
        return
    with _pending_lock:
        started = _pending.pop((assoc_key, int(key_id)), None)
    took = f" in {(now - started) * 1000:.1f} ms" if started is not None else ""
    status = cmd.get("Status", None)
    text = format_status(int(status)) if status is not None else "no status"
    log.info("%s: %s %s id=%s status %s%s", _who(event.assoc), direction, name, key_id, text, took)


def _on_sent(event: Any) -> None:
    _message_line(event, "sent")


def _on_recv(event: Any) -> None:
    _message_line(event, "received")


def association_handlers() -> list[tuple[Any, Any]]:
    """pynetdicom event handlers that log associations and DIMSE messages (none below -v)."""
    if not log.isEnabledFor(logging.INFO):
        return []
    from pynetdicom import evt

    return [
        (evt.EVT_ACCEPTED, _on_accepted),
        (evt.EVT_REJECTED, _on_rejected),
        (evt.EVT_RELEASED, _on_released),
        (evt.EVT_ABORTED, _on_aborted),
        (evt.EVT_DIMSE_SENT, _on_sent),
        (evt.EVT_DIMSE_RECV, _on_recv),
    ]
