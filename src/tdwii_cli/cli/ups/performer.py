"""`tdwii ups claim|progress|complete|cancel`: the performer's transactions (RO-60 to RO-65).

`claim` keeps the new Transaction UID in the transaction file; the others find it
there (or take `--transaction-uid`); a final state removes it.
"""

from typing import Annotated

import typer

from tdwii_cli import exitcodes
from tdwii_cli.cli.options.association import scu_options
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_options
from tdwii_cli.cli.ups.common import (
    Host,
    Port,
    TransactionsPath,
    TransactionUid,
    Uid,
    forget,
    held,
    peer,
    transaction_file,
)
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions

Station = Annotated[
    str,
    typer.Option(
        "--station",
        metavar="CODE",
        help="Performed station, when the workitem names none [default: our AE title].",
    ),
]


def _say(text: str) -> None:
    from tdwii_cli.cli.ups.render import print_line

    print_line(text)


def _status_words(status: int) -> str:
    from tdwii_cli.client.statuses import describe

    return describe(status)


@log_options
@tls_options("client")
@scu_options
def claim(
    host: Host,
    port: Port,
    uid: Uid,
    transactions: TransactionsPath = None,
    transaction_uid: TransactionUid = None,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Claim a workitem (Change State to IN PROGRESS, RO-60); prints its Transaction UID."""
    from tdwii_cli.client import procedure
    from tdwii_cli.client.transactions import Transaction
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.uids import UPS_PULL
    from tdwii_cli.dicom.values import now_dt, valid_uid
    from tdwii_cli.errors import Interrupted, TdwiiError

    txn_uid = (transaction_uid or "").strip() or procedure.new_transaction_uid()
    if not valid_uid(txn_uid):
        raise TdwiiError(f"--transaction-uid {transaction_uid!r} is not a UID", exitcodes.USAGE)
    store = transaction_file(transactions)
    store.all()  # a corrupt file is reported before the claim, not after
    claimed = now_dt()
    try:
        with connect(peer(host, port, tls, net), [UPS_PULL]) as client:
            status = procedure.claim(client, uid, txn_uid)
    except Interrupted:  # the server may have taken the claim: say with which credential
        raise Interrupted(
            f"interrupted (Ctrl-C) during the claim of {uid}; if the server took it, its "
            f"Transaction UID is {txn_uid} (tdwii ups cancel/complete --transaction-uid)"
        ) from None
    store.put(Transaction(uid, txn_uid, f"{host}:{port}", net.called_aet, claimed))
    _say(f"claimed {uid}: IN PROGRESS, Transaction UID {txn_uid}, status {_status_words(status)}")
    _say(f"kept in {store.path}")


@log_options
@tls_options("client")
@scu_options
def progress(
    host: Host,
    port: Port,
    uid: Uid,
    percent: Annotated[
        float, typer.Option("--percent", min=0, max=100, metavar="P", help="Progress, 0-100.")
    ],
    description: Annotated[
        str, typer.Option("--description", metavar="TEXT", help="What was done so far.")
    ] = "",
    beam: Annotated[
        int | None, typer.Option("--beam", min=1, metavar="N", help="The beam just delivered.")
    ] = None,
    transactions: TransactionsPath = None,
    transaction_uid: TransactionUid = None,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Report progress on a claimed workitem (N-SET, RO-62)."""
    from tdwii_cli.client import procedure
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.uids import UPS_PULL

    txn = held(uid, transactions, transaction_uid)
    assert txn is not None
    with connect(peer(host, port, tls, net), [UPS_PULL]) as client:
        status = procedure.progress(client, uid, txn.transaction_uid, percent, description, beam)
    _say(f"progress of {uid}: {percent:g}%, status {_status_words(status)}")


@log_options
@tls_options("client")
@scu_options
def complete(
    host: Host,
    port: Port,
    uid: Uid,
    output: Annotated[
        list[str] | None,
        typer.Option("--output", metavar="UID", help="A treatment record produced (repeatable)."),
    ] = None,
    station: Station = "",
    transactions: TransactionsPath = None,
    transaction_uid: TransactionUid = None,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Complete a claimed workitem: the final update (RO-64), then COMPLETED (RO-65)."""
    from tdwii_cli.client import procedure
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.uids import UPS_PULL
    from tdwii_cli.dicom.values import valid_uid
    from tdwii_cli.errors import TdwiiError

    for instance in output or ():
        if not valid_uid(instance):
            raise TdwiiError(f"--output {instance!r} is not a UID", exitcodes.USAGE)
    txn = held(uid, transactions, transaction_uid)
    assert txn is not None
    with connect(peer(host, port, tls, net), [UPS_PULL]) as client:
        status = procedure.complete(
            client,
            uid,
            txn.transaction_uid,
            started=txn.claimed,
            station=station or net.calling_aet,
            outputs=output or (),
        )
    forget(transactions, uid)
    _say(f"completed {uid}, status {_status_words(status)}")


@log_options
@tls_options("client")
@scu_options
def cancel(
    host: Host,
    port: Port,
    uid: Uid,
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why (Reason For Cancellation).")
    ] = "",
    contact: Annotated[
        str,
        typer.Option(
            "--contact", metavar="NAME", help="Who to ask about it [default: our AE title]."
        ),
    ] = "",
    station: Station = "",
    transactions: TransactionsPath = None,
    transaction_uid: TransactionUid = None,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Cancel a workitem: as its performer (the Transaction UID is held here), the final
    update and CANCELED; otherwise Request Cancel (N-ACTION), which the server or the
    performer decides."""
    from tdwii_cli.client import procedure
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.uids import UPS_PULL, UPS_PUSH, UPS_WATCH

    txn = held(uid, transactions, transaction_uid, required=False)
    target = peer(host, port, tls, net)
    if txn is not None:
        with connect(target, [UPS_PULL]) as client:
            status = procedure.cancel(
                client,
                uid,
                txn.transaction_uid,
                started=txn.claimed,
                station=station or net.calling_aet,
                reason=reason,
            )
        forget(transactions, uid)
        _say(f"canceled {uid} as its performer, status {_status_words(status)}")
        return
    with connect(target, [UPS_PUSH, UPS_WATCH, UPS_PULL], required=()) as client:
        status = procedure.request_cancel(
            client, uid, reason=reason, contact=contact or net.calling_aet
        )
    _say(f"cancel of {uid} requested, status {_status_words(status)}")
