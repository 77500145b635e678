"""`tdwii ups subscribe|unsubscribe|suspend`: event report subscriptions (N-ACTION 3, 4, 5)."""

from typing import TYPE_CHECKING, Annotated

import typer

from tdwii_cli import exitcodes
from tdwii_cli.cli.options.association import scu_options
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_options
from tdwii_cli.cli.ups.common import Host, Port, parse_keys, peer
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions

if TYPE_CHECKING:
    from tdwii_cli.dicom.keys import Key

Target = Annotated[
    str | None,
    typer.Argument(
        help="A workitem's UID [default: every workitem (--global)].", show_default=False
    ),
]
Global = Annotated[
    bool, typer.Option("--global", help="Every workitem, now and to come (the default).")
]
Filters = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        metavar="KEY=VALUE",
        help="Only the workitems that match (Filtered Global Subscription); repeatable.",
    ),
]
Receiving = Annotated[
    str,
    typer.Option(
        "--receiving-ae", metavar="AE", help="Who gets the reports [default: our AE title, -aet]."
    ),
]


def _target(
    uid: str | None, global_: bool, filters: list[str] | None
) -> "tuple[str, tuple[Key, ...]]":
    from tdwii_cli.client.subscription import target
    from tdwii_cli.dicom.values import valid_uid
    from tdwii_cli.errors import TdwiiError

    keys = parse_keys(filters)
    if uid and (global_ or keys):
        raise TdwiiError("a UID excludes --global and --filter", exitcodes.USAGE)
    if uid and not valid_uid(uid):
        raise TdwiiError(f"{uid!r} is not a UID", exitcodes.USAGE)
    if any(k.value is None for k in keys):
        raise TdwiiError("--filter needs KEY=VALUE", exitcodes.USAGE)
    return target(uid, keys), keys


def _say(text: str) -> None:
    from tdwii_cli.cli.ups.render import print_line

    print_line(text)


@log_options
@tls_options("client")
@scu_options
def subscribe(
    host: Host,
    port: Port,
    uid: Target = None,
    global_: Global = False,
    filters: Filters = None,
    receiving_ae: Receiving = "",
    lock: Annotated[
        bool, typer.Option("--lock", help="Ask for a Deletion Lock (keep it until we leave).")
    ] = False,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Subscribe an AE title to a workitem's events, or to every (matching) workitem's."""
    from tdwii_cli.client import subscription
    from tdwii_cli.client.statuses import describe
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.uids import UPS_WATCH

    instance, keys = _target(uid, global_, filters)
    receiving = receiving_ae or net.calling_aet
    with connect(peer(host, port, tls, net), [UPS_WATCH]) as client:
        status = subscription.subscribe(client, instance, receiving, lock=lock, filters=keys)
    _say(f"subscribed {receiving} to {instance}, status {describe(status)}")


@log_options
@tls_options("client")
@scu_options
def unsubscribe(
    host: Host,
    port: Port,
    uid: Target = None,
    global_: Global = False,
    receiving_ae: Receiving = "",
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Unsubscribe an AE title from a workitem, or (--global) from everything."""
    from tdwii_cli.client import subscription
    from tdwii_cli.client.statuses import describe
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.uids import UPS_WATCH

    instance, _keys = _target(uid, global_, None)
    receiving = receiving_ae or net.calling_aet
    with connect(peer(host, port, tls, net), [UPS_WATCH]) as client:
        status = subscription.unsubscribe(client, instance, receiving)
    _say(f"unsubscribed {receiving} from {instance}, status {describe(status)}")


@log_options
@tls_options("client")
@scu_options
def suspend(
    host: Host,
    port: Port,
    receiving_ae: Receiving = "",
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Suspend an AE title's global subscription: no new workitems are added to it."""
    from tdwii_cli.client import subscription
    from tdwii_cli.client.statuses import describe
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.uids import UPS_WATCH

    receiving = receiving_ae or net.calling_aet
    with connect(peer(host, port, tls, net), [UPS_WATCH]) as client:
        status = subscription.suspend(client, receiving)
    _say(f"suspended the global subscription of {receiving}, status {describe(status)}")
