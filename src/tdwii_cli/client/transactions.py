"""The performer's Transaction UIDs, kept in a small local file between commands.

`tdwii ups claim` records the Transaction UID of each workitem it claims (with
where and when), so `progress`, `complete` and `cancel` find it without
copy-paste; a final state removes it. The file is JSON, mode 0600 in a folder
0700 (a Transaction UID is the performer's credential), replaced atomically under
a lock, so two commands at once and a crash never leave it half-written. Default:
`$TDWII_TRANSACTIONS`, else `$XDG_STATE_HOME/tdwii/transactions.json`
(`~/.local/state/tdwii/transactions.json`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import KEY_MODE, make_dirs, warn_if_open, write_atomic

VERSION = 1
_checked: set[Path] = set()  # files already checked for permissions others have, this process


def default_path() -> Path:
    """Where the transactions are kept when `--transactions` is not given."""
    explicit = os.environ.get("TDWII_TRANSACTIONS")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tdwii" / "transactions.json"


@dataclass(frozen=True)
class Transaction:
    """One claimed workitem: its Transaction UID, the peer, when it was claimed (a DT)."""

    uid: str
    transaction_uid: str
    peer: str = ""
    called_aet: str = ""
    claimed: str = ""


class TransactionFile:
    """The file at `path` (see the module docstring)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    def _fail(self, why: str) -> TdwiiError:
        return TdwiiError(
            f"transaction file {self.path} {why}",
            hint="move it away (the claims it held are lost) or pass --transaction-uid",
        )

    def _read(self) -> dict[str, Transaction]:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self._fail(f"cannot be read: {exc.strerror or exc}") from None
        if self.path not in _checked:  # once: it holds the performer's credentials
            _checked.add(self.path)
            warn_if_open([self.path], "transaction file", "Transaction UIDs (claims)")
        try:
            doc = json.loads(text.decode("utf-8"))
            items = doc["workitems"] if isinstance(doc, dict) else None
            if doc.get("version") != VERSION or not isinstance(items, dict):
                raise ValueError("not a tdwii transaction file")
            return {uid: _entry(uid, item) for uid, item in items.items()}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise self._fail("is corrupt (not a tdwii transaction file)") from None

    def _write(self, entries: dict[str, Transaction]) -> None:
        doc: dict[str, Any] = {
            "version": VERSION,
            "workitems": {
                uid: {k: v for k, v in asdict(t).items() if k != "uid"}
                for uid, t in sorted(entries.items())
            },
        }
        data = (json.dumps(doc, indent=2) + "\n").encode()
        try:
            write_atomic(self.path, data, mode=KEY_MODE)
        except OSError as exc:
            raise self._fail(f"cannot be written: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            make_dirs(self.path.parent, 0o700)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, KEY_MODE)
        except OSError as exc:
            raise self._fail(f"cannot be locked: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def get(self, uid: str) -> Transaction | None:
        """The recorded transaction of workitem `uid`, if any."""
        return self._read().get(uid)

    def all(self) -> list[Transaction]:
        return list(self._read().values())

    def put(self, transaction: Transaction) -> None:
        """Record (or replace) the transaction of its workitem."""
        with self._locked():
            entries = self._read()
            entries[transaction.uid] = transaction
            self._write(entries)

    def remove(self, uid: str) -> bool:
        """Forget workitem `uid` (it is final); False when it was not there."""
        if not self.path.exists():
            return False
        with self._locked():
            entries = self._read()
            if entries.pop(uid, None) is None:
                return False
            self._write(entries)
            return True


def _entry(uid: str, item: Any) -> Transaction:
    if not isinstance(item, dict) or not isinstance(item.get("transaction_uid"), str):
        raise ValueError(uid)
    return Transaction(
        uid=uid,
        transaction_uid=item["transaction_uid"],
        peer=str(item.get("peer", "")),
        called_aet=str(item.get("called_aet", "")),
        claimed=str(item.get("claimed", "")),
    )
