"""The known application entities (`ApplicationEntities.json`): read, checked, and updated.

The file is a list of objects, or an object mapping AE titles to objects. Each entry:

- `AETitle` (the key, in the object form), `IPAddr` and `Port` where the AE listens for
  event reports (optional together: an AE that only calls us needs none), `mTLS`
  (reports to it over mutual TLS; default false);
- `Certificates`: the certificate identities that may use this AE title
  (`tdwii_cli.access.identity`: `CN=`, `DNS:`, `IP:`, `URI:`, `SHA256:`);
- `Roles`: what it may do (`tdwii_cli.access.roles`).

The format of the `upsscp.py` tdwii replaces (`AETitle`, `IPAddr`, `Port`, `mTLS`) keeps
working as it is. A key that is almost a known one (`Role`, `certificates`) is refused,
so that a typo never drops a binding silently; other keys are kept and ignored.
`update_entry()` writes or updates one entry and keeps everything else in the file.
"""

from __future__ import annotations

import difflib
import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdwii_cli.access.identity import IdentityError, canonical
from tdwii_cli.access.roles import ROLES, RoleError, parse_roles
from tdwii_cli.dicom.values import ae_title_problem
from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import PUBLIC_MODE, read_bytes, write_atomic

KNOWN_KEYS = ("AETitle", "IPAddr", "Port", "mTLS", "Certificates", "Roles")
_HINT = (
    'each entry has "AETitle", optionally "IPAddr" and "Port" (where it receives event '
    'reports), "mTLS", "Certificates" and "Roles"'
)


@dataclass(frozen=True)
class KnownAE:
    """An application entity of the configuration: where it listens (when it does), the
    certificate identities bound to it (canonical keys; `identities` as written) and its
    roles."""

    ae_title: str
    address: str | None = None
    port: int | None = None
    mtls: bool = False
    certificates: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)
    identities: tuple[str, ...] = ()

    @property
    def reachable(self) -> bool:
        """Whether it has an address to send event reports to."""
        return self.address is not None and self.port is not None

    @property
    def roles_words(self) -> str:
        return ", ".join(r for r in ROLES if r in self.roles) or "none"


def _problem(path: Path, where: str, message: str) -> TdwiiError:
    return TdwiiError(f"AE config {path}: {where}: {message}", hint=_HINT)


def _check_keys(path: Path, where: str, item: dict[str, Any]) -> None:
    lowered = {k.lower(): k for k in KNOWN_KEYS}
    for key in item:
        if key in KNOWN_KEYS:
            continue
        near = lowered.get(str(key).lower()) or next(
            iter(difflib.get_close_matches(str(key), KNOWN_KEYS, n=1, cutoff=0.75)), None
        )
        if near is not None:
            raise _problem(path, where, f"unknown key {key!r} (did you mean {near}?)")


def _strings(path: Path, where: str, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _problem(path, where, f"{key} must be a list of strings")


def _entry(path: Path, where: str, title: Any, item: dict[str, Any]) -> KnownAE:
    if not isinstance(title, str) or not title.strip():
        raise _problem(path, where, "AETitle missing or not a string")
    title = title.strip()
    if ae_title_problem(title) is not None:
        raise _problem(
            path, where, f"AETitle {title!r} is not a DICOM AE title (at most 16 ASCII characters)"
        )
    where = f"{where} ({title})" if title not in where else where
    _check_keys(path, where, item)
    address = item.get("IPAddr")
    port = item.get("Port")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise _problem(path, where, f"{title}: IPAddr {address!r} is not a host name or address")
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        raise _problem(path, where, f"{title}: Port {port!r} is not a TCP port (1-65535)")
    if (address is None) != (port is None):
        raise _problem(path, where, f"{title}: IPAddr and Port go together (or neither)")
    mtls = item.get("mTLS", False)
    if not isinstance(mtls, bool):
        raise _problem(path, where, f"{title}: mTLS {mtls!r} is not true or false")
    identities = _strings(path, where, "Certificates", item.get("Certificates"))
    try:
        keys = frozenset(canonical(text) for text in identities)
        roles = parse_roles(_strings(path, where, "Roles", item.get("Roles")))
    except (IdentityError, RoleError) as exc:
        raise _problem(path, where, str(exc)) from None
    return KnownAE(
        ae_title=title,
        address=address.strip() if isinstance(address, str) else None,
        port=port,
        mtls=mtls,
        certificates=keys,
        roles=roles,
        identities=tuple(identities),
    )


def _read_json(path: Path) -> Any:
    raw = read_bytes(path, "AE config", missing_hint="check the --ae-config path")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise TdwiiError(f"AE config {path} is not valid JSON{detail}") from None


def _items(path: Path, data: Any) -> list[tuple[str, Any, Any]]:
    """(where, title, item) for every entry of the file's JSON."""
    entries: list[tuple[str, Any, Any]] = []
    if isinstance(data, list):
        for i, item in enumerate(data, start=1):
            if not isinstance(item, dict):
                raise TdwiiError(f"AE config {path}: entry {i} is not an object")
            entries.append((f"entry {i}", item.get("AETitle"), item))
    elif isinstance(data, dict):
        for title, item in data.items():
            if not isinstance(item, dict):
                raise TdwiiError(f"AE config {path}: {title!r} is not an object")
            entries.append((repr(title), item.get("AETitle", title), item))
    else:
        raise TdwiiError(
            f"AE config {path}: expected a list of application entities",
            hint='e.g. [{"AETitle": "TDD", "IPAddr": "127.0.0.1", "Port": 11113, "mTLS": true, '
            '"Certificates": ["CN=tdd"], "Roles": ["perform", "query"]}]',
        )
    return entries


def load(path: str | Path) -> dict[str, KnownAE]:
    """Read and check an AE configuration file; AE title -> `KnownAE`."""
    path = Path(path)
    known: dict[str, KnownAE] = {}
    for where, title, item in _items(path, _read_json(path)):
        entry = _entry(path, where, title, item)
        if entry.ae_title in known:
            raise TdwiiError(f"AE config {path}: {entry.ae_title} is listed twice")
        known[entry.ae_title] = entry
    return known


@dataclass(frozen=True)
class Update:
    """What `update_entry` did: the entry as it is now, and whether it was new."""

    entry: KnownAE
    created: bool
    file_created: bool


def update_entry(
    path: str | Path,
    ae_title: str,
    identity: str,
    roles: frozenset[str],
    *,
    address: str | None = None,
    port: int | None = None,
    mtls: bool | None = None,
) -> Update:
    """Bind `identity` to `ae_title` with `roles` (replacing its roles) in the AE
    configuration at `path`, creating the file or the entry as needed; everything else in
    the file stays as it was. The file is checked before and after, and replaced atomically."""
    path = Path(path)
    problem = ae_title_problem(ae_title)
    if problem is not None:
        raise TdwiiError(f"AE title {ae_title!r} {problem}")
    try:
        canonical(identity)  # a bad identity never reaches the file
    except IdentityError as exc:
        raise TdwiiError(str(exc)) from None
    file_created = not path.exists()
    data: Any = [] if file_created else _read_json(path)
    if not file_created:
        load(path)  # a broken file is reported as it is, never rewritten
    item: dict[str, Any] | None = None
    for _where, title, candidate in _items(path, data):
        if isinstance(title, str) and title.strip() == ae_title:
            item = candidate
    created = item is None
    if item is None:
        item = {"AETitle": ae_title} if isinstance(data, list) else {}
        if isinstance(data, list):
            data.append(item)
        else:
            data[ae_title] = item
    bound = _strings(path, ae_title, "Certificates", item.get("Certificates"))
    if canonical(identity) not in {canonical(text) for text in bound}:
        bound.append(identity)
    item["Certificates"] = bound
    item["Roles"] = [r for r in ROLES if r in roles]
    if address is not None and port is not None:
        item["IPAddr"], item["Port"] = address, port
    if mtls is not None:
        item["mTLS"] = mtls
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    mode = PUBLIC_MODE if file_created else stat.S_IMODE(path.stat().st_mode)
    write_atomic(path, text.encode("utf-8"), mode)
    entry = load(path)[ae_title]
    return Update(entry=entry, created=created, file_created=file_created)
