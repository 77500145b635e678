"""Verification SCU: C-ECHO over one or more associations, with round-trip times.

Built on `dulraw` (sockets and `ssl` only), so a one-shot `tdwii echo` does not
pay for importing pydicom and pynetdicom.
"""

from __future__ import annotations

import logging
import socket
import ssl
import statistics
import time
from dataclasses import dataclass, field

from tdwii_cli import dulraw, exitcodes
from tdwii_cli.errors import TdwiiError
from tdwii_cli.scuoptions import ScuOptions
from tdwii_cli.tlsoptions import TlsOptions

log = logging.getLogger("tdwii.net")
_TS_NAMES = {"1.2.840.10008.1.2": "Implicit VR LE", "1.2.840.10008.1.2.1": "Explicit VR LE"}


@dataclass
class EchoResult:
    """What `run_echo` saw: statuses and round-trip times (ms), and the TLS session."""

    peer: str
    statuses: list[int] = field(default_factory=list)
    rtts_ms: list[float] = field(default_factory=list)
    associations: int = 0
    tls_version: str = ""
    cipher: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.statuses) and all(s == 0 for s in self.statuses)

    def summary(self) -> dict[str, float]:
        r = self.rtts_ms
        if not r:
            return {}
        return {"min": min(r), "median": statistics.median(r), "max": max(r)}


def status_words(code: int) -> str:
    """`0x0000 (Success)`; other codes in pynetdicom's words (imported only then)."""
    if code == 0:
        return "0x0000 (Success)"
    from tdwii_cli.netlog import format_status

    return format_status(code)


def _connect(host: str, port: int, ctx: ssl.SSLContext | None, net: ScuOptions) -> socket.socket:
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
            hint="is our certificate from a CA the server trusts (and not revoked)? its log says",
        )
    return TdwiiError(
        f"TLS handshake with {peer} failed: the server closed the connection right after the "
        "handshake: it requires a client certificate and we presented none",
        exitcodes.TLS_HANDSHAKE,
        hint="use --mtls (with --cert/--key), not --tls",
    )


def _one_association(
    host: str,
    port: int,
    ctx: ssl.SSLContext | None,
    net: ScuOptions,
    count: int,
    result: EchoResult,
    mutual: bool = True,
) -> None:
    from tdwii_cli import tls as tlsmod

    peer = f"{host}:{port}"
    sock = _connect(host, port, ctx, net)
    try:
        try:
            acc = dulraw.request_association(sock, net.calling_aet, net.called_aet)
        except ssl.SSLError as exc:
            if not isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
                raise tlsmod.handshake_error(peer, exc, side="client") from None
            raise _refused_after_handshake(peer, mutual) from None
        except (TimeoutError, dulraw.AbortPdu):
            # no answer, or an A-ABORT over an established TLS session (so our certificate
            # was accepted): "did not answer in time" / "association aborted" (62) below
            raise
        except (dulraw.Aborted, OSError) as exc:
            if ctx is None:
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
        result.associations += 1
        ts = acc.transfer_syntax
        log.info(
            "%s: association accepted, %s -> %s, peer max PDU %s",
            peer,
            net.calling_aet,
            acc.called,
            acc.max_pdu or "unlimited",
        )
        if ts is None:
            dulraw.release(sock)
            raise TdwiiError(
                f"{net.called_aet}@{peer} refused the Verification context",
                exitcodes.ASSOC_REJECTED,
                hint="the peer does not answer C-ECHO",
            )
        log.info("  accepted  Verification  %s", _TS_NAMES.get(ts, ts))
        if isinstance(sock, ssl.SSLSocket):
            result.tls_version = sock.version() or ""
            result.cipher = (sock.cipher() or ("",))[0]
        sock.settimeout(net.dimse_timeout)
        for message_id in range(1, count + 1):
            start = time.perf_counter()
            sock.sendall(dulraw.echo_rq(message_id))
            status = dulraw.echo_status(dulraw.read_command(sock))
            took = (time.perf_counter() - start) * 1000
            log.info(
                "%s: C-ECHO id=%d status %s in %.1f ms",
                peer,
                message_id,
                status_words(status),
                took,
            )
            result.statuses.append(status)
            result.rtts_ms.append(took)
        sock.settimeout(net.acse_timeout)
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
        sock.close()


def run_echo(
    host: str, port: int, *, tls: TlsOptions, net: ScuOptions, count: int = 1, repeat: int = 1
) -> EchoResult:
    """`count` C-ECHOs on each of `repeat` associations; raises `TdwiiError` on failure."""
    ctx = None
    if tls.enabled:
        from tdwii_cli import tls as tlsmod

        ctx = tlsmod.build_client_context(tls)
    result = EchoResult(peer=f"{host}:{port}")
    for _ in range(repeat):
        _one_association(host, port, ctx, net, count, result, tls.mutual)
    return result
