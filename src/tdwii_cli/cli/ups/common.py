"""What the `tdwii ups` commands share: the peer, UID arguments, the transaction file and
Transaction UID options, and keys (declared once, here)."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tdwii_cli import exitcodes
from tdwii_cli.dicom.values import valid_uid
from tdwii_cli.errors import TdwiiError
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions

if TYPE_CHECKING:
    from tdwii_cli.client.peer import Peer
    from tdwii_cli.client.transactions import Transaction, TransactionFile
    from tdwii_cli.dicom.keys import Key


def _uid(value: str) -> str:
    value = value.strip()
    if not valid_uid(value):
        raise typer.BadParameter(f"{value!r} is not a UID (digits and dots, at most 64)")
    return value


Host = Annotated[str, typer.Argument(help="The worklist manager's host name or address.")]
Port = Annotated[int, typer.Argument(help="Its port (2762 for DICOM TLS).", min=1, max=65535)]
Uid = Annotated[str, typer.Argument(help="The workitem's SOP Instance UID.", callback=_uid)]
Json = Annotated[bool, typer.Option("--json", help="DICOM JSON / JSON lines on stdout.")]
TransactionsPath = Annotated[
    Path | None,
    typer.Option(
        "--transactions",
        metavar="FILE",
        help="The transaction file [default: $TDWII_TRANSACTIONS or "
        "~/.local/state/tdwii/transactions.json].",
    ),
]
TransactionUid = Annotated[
    str | None,
    typer.Option(
        "--transaction-uid",
        metavar="UID",
        help="Use this Transaction UID instead of the one the transaction file holds.",
    ),
]
Keys = Annotated[
    list[str] | None,
    typer.Option(
        "--keyword",
        "-k",
        metavar="KEY[=VALUE]",
        help="Any attribute: Keyword, (gggg,eeee) or Seq[0].Keyword, with a value to match.",
    ),
]


def peer(host: str, port: int, tls: TlsOptions, net: ScuOptions) -> "Peer":
    from tdwii_cli.client.peer import Peer

    return Peer(host, port, tls, net)


def parse_keys(values: list[str] | None) -> "tuple[Key, ...]":
    from tdwii_cli.dicom.keys import parse_key

    return tuple(parse_key(v) for v in values or ())


def transaction_file(path: Path | None) -> "TransactionFile":
    from tdwii_cli.client.transactions import TransactionFile

    return TransactionFile(path)


def held(
    uid: str, path: Path | None, given: str | None, *, required: bool = True
) -> "Transaction | None":
    """The Transaction UID for `uid`: `--transaction-uid`, else the transaction file's
    (a file that cannot be read is an error only when it is needed)."""
    from tdwii_cli.client.transactions import Transaction

    store = transaction_file(path)
    if given:
        if not valid_uid(given.strip()):
            raise TdwiiError(f"--transaction-uid {given!r} is not a UID", exitcodes.USAGE)
        try:
            kept = store.get(uid)
        except TdwiiError:
            kept = None  # the file is not needed: the claim time is only a detail
        claimed = kept.claimed if kept is not None else ""
        return Transaction(uid, given.strip(), claimed=claimed)
    found = store.get(uid)
    if found is None and required:
        raise TdwiiError(
            f"no Transaction UID for {uid} in {store.path}",
            hint="claim it first (tdwii ups claim), or pass --transaction-uid",
        )
    return found


def forget(path: Path | None, uid: str) -> None:
    """Remove a final workitem from the transaction file; a file that cannot be written is
    a warning (the workitem is final whatever the file says)."""
    import logging

    try:
        transaction_file(path).remove(uid)
    except TdwiiError as exc:
        logging.getLogger("tdwii.ups").warning("%s", exc.message)
