"""`tdwii ups watch`: an N-EVENT-REPORT receiver that prints each report as it arrives."""

import logging
import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from tdwii_cli.cli.options.association import scu_options
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_options
from tdwii_cli.errors import Interrupted
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions

if TYPE_CHECKING:
    from tdwii_cli.client.peer import Peer
    from tdwii_cli.client.watch import Watcher

wlog = logging.getLogger("tdwii.watch")
LISTEN = "Listening"
CTRL_C_GRACE = 0.3  # seconds, after Ctrl-C, for the unsubscription and running senders


@log_options
@tls_options("server")
@scu_options
def watch(
    port: Annotated[
        int,
        typer.Option(
            "--port",
            "-p",
            min=0,
            max=65535,
            help="Port to listen on (0: any free).",
            rich_help_panel=LISTEN,
        ),
    ] = 11113,
    bind_address: Annotated[
        str,
        typer.Option(
            "--bind-address",
            "-ba",
            metavar="ADDRESS",
            help="Local address [default: all].",
            rich_help_panel=LISTEN,
        ),
    ] = "",
    subscribe: Annotated[
        tuple[str, int] | None,
        typer.Option(
            "--subscribe",
            metavar="HOST PORT",
            help="Subscribe our AE title (-aet) at this worklist manager (-aec) on start, "
            "unsubscribe on Ctrl-C.",
        ),
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            metavar="KEY=VALUE",
            help="With --subscribe: only matching workitems (Filtered Global).",
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("--count", min=0, metavar="N", help="Exit after N reports (0: never).")
    ] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")] = False,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Receive UPS event reports (N-EVENT-REPORT) and print each, one line (or JSON) each.

    The worklist manager must know our AE title (-aet), address and port. With
    --subscribe it is asked to send us every workitem's reports (or --filter's).
    Senders get -to for the TLS handshake, -ta for the association request, -td
    for each PDU and -tn between requests.
    """
    from tdwii_cli.client.watch import Report, Watcher, WatchSettings

    done = threading.Event()

    def show(report: Report) -> None:
        from tdwii_cli.cli.ups.render import print_line

        if json_out:
            import json

            print_line(json.dumps(report.to_json()))
        else:
            print_line(report.line())
        if count and watcher.count >= count:
            done.set()

    ssl_context = None
    if tls.enabled:
        from tdwii_cli.tls.context import build_server_context

        ssl_context = build_server_context(tls)
    settings = WatchSettings(
        handshake_timeout=net.connect_timeout,  # -to: the TLS handshake
        acse_timeout=net.acse_timeout,  # -ta: ARTIM
        dimse_timeout=net.dimse_timeout,
        network_timeout=net.network_timeout,
    )
    watcher = Watcher(net.calling_aet, ssl_context, show, settings)
    _listen(watcher, bind_address, port)
    host, bound = watcher.address
    mode = tls.mode_words
    shown = f"[{host}]" if ":" in host else host
    _banner(
        log,
        f"tdwii ups watch: {net.calling_aet} listening on {shown}:{bound} ({mode}); Ctrl-C to stop",
    )
    subscribed = None
    ended_by: int | None = None
    try:
        if subscribe is not None:
            subscribed = _subscribe(subscribe, filters, tls, net)
            _banner(log, f"subscribed {net.calling_aet} at {subscribe[0]}:{subscribe[1]}")
        ended_by = _wait(done)
    finally:
        ctrl_c = ended_by == signal.SIGINT
        if subscribed is not None:  # after Ctrl-C, briefly: the person is waiting
            _unsubscribe(subscribed, tls, _brief(net) if ctrl_c else net)
        watcher.stop(CTRL_C_GRACE if ctrl_c else 2.0)
    wlog.info("%d report(s) received", watcher.count)
    if ended_by == signal.SIGINT:
        raise Interrupted(f"interrupted (Ctrl-C): {watcher.count} report(s) received")


def _banner(log: LogOptions, text: str) -> None:
    """A line for the person at the terminal, on stderr (not with -q)."""
    if log.level <= logging.WARNING:
        import sys

        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _listen(watcher: "Watcher", host: str, port: int) -> None:
    from tdwii_cli.cli.listening import listen_error
    from tdwii_cli.scp.acceptor import wildcard_address

    try:
        watcher.start(host or wildcard_address(), port)
    except OSError as exc:
        raise listen_error(exc, host, port) from None


def _wait(done: threading.Event) -> int | None:
    """Until `done`, SIGINT or SIGTERM; the signal that ended it, if one did."""
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        done.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        while not done.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0] if received else None


def _brief(net: ScuOptions) -> ScuOptions:
    """`net` with every timeout at most `CTRL_C_GRACE`: the unsubscription after Ctrl-C."""
    from dataclasses import replace

    return replace(
        net,
        connect_timeout=min(net.connect_timeout, CTRL_C_GRACE),
        acse_timeout=min(net.acse_timeout, CTRL_C_GRACE),
        dimse_timeout=min(net.dimse_timeout, CTRL_C_GRACE),
    )


def _subscription_peer(target: tuple[str, int], tls: TlsOptions, net: ScuOptions) -> "Peer":
    from dataclasses import replace

    from tdwii_cli.cli.ups.common import peer

    client_tls = replace(tls, role="client") if tls.enabled else tls
    return peer(target[0], target[1], client_tls, net)


def _subscribe(
    target: tuple[str, int], filters: list[str] | None, tls: TlsOptions, net: ScuOptions
) -> tuple[tuple[str, int], str]:
    from tdwii_cli.cli.ups.common import parse_keys
    from tdwii_cli.client import subscription
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.uids import UPS_WATCH

    keys = parse_keys(filters)
    instance = subscription.target(None, keys)
    with connect(_subscription_peer(target, tls, net), [UPS_WATCH]) as client:
        subscription.subscribe(client, instance, net.calling_aet, filters=keys)
    return target, instance


def _unsubscribe(subscribed: tuple[tuple[str, int], str], tls: TlsOptions, net: ScuOptions) -> None:
    from tdwii_cli.client import subscription
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.uids import UPS_WATCH
    from tdwii_cli.errors import TdwiiError

    target, instance = subscribed
    try:
        with connect(_subscription_peer(target, tls, net), [UPS_WATCH]) as client:
            subscription.unsubscribe(client, instance, net.calling_aet)
        wlog.info("unsubscribed %s at %s:%d", net.calling_aet, *target)
    except TdwiiError as exc:
        wlog.error("could not unsubscribe: %s", exc.message)
