"""`tdwii serve` configuration: the INI file, the command line on top of it, and the known
application entities (`ApplicationEntities.json`).

The INI file has the keys of the `upsscp.py` worklist manager tdwii replaces, in
its `[DEFAULT]` section (`ae_title`, `port`, `bind_address`, `max_pdu`,
`acse_timeout`, `dimse_timeout`, `network_timeout`, `mutual_tls`,
`ca_certificate`, `certificate`, `private_key`, `database_location`; tdwii also
reads `max_associations`, `max_associations_per_host`, `max_pending`,
`max_pending_per_host`, `max_message_size`, `require_called_aet`,
`handshake_timeout`, `shutdown_grace`, `ae_config` and `retention`).
Keys of that format tdwii has no use for (`instance_location`, `log_identifier`)
and other sections (move destinations) are ignored. Relative paths are relative
to the current folder.

`ApplicationEntities.json` is a list of `{"AETitle", "IPAddr", "Port", "mTLS"}`
objects (`mTLS` optional, false by default), or an object mapping AE titles to
`{"IPAddr", "Port", "mTLS"}`.

Every problem is one `TdwiiError` line naming the file and the key.
"""

from __future__ import annotations

import configparser
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdwii_cli.dicom.values import ae_title_problem
from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import read_bytes

if TYPE_CHECKING:
    from tdwii_cli.tls.options import TlsOptions

PLAIN_PORT = 11112
TLS_PORT = 2762

INT_KEYS = (
    "port",
    "max_pdu",
    "max_associations",
    "max_associations_per_host",
    "max_pending",
    "max_pending_per_host",
    "max_message_size",
)
FLOAT_KEYS = (
    "acse_timeout",
    "dimse_timeout",
    "network_timeout",
    "handshake_timeout",
    "shutdown_grace",
)
BOOL_KEYS = ("mutual_tls", "require_called_aet")
PATH_KEYS = ("ca_certificate", "certificate", "private_key", "database_location", "ae_config")
STR_KEYS = ("ae_title", "bind_address", "retention")
KNOWN_KEYS = INT_KEYS + FLOAT_KEYS + BOOL_KEYS + PATH_KEYS + STR_KEYS
IGNORED_KEYS = ("instance_location", "log_identifier")  # upsscp.py keys tdwii does not use


@dataclass(frozen=True)
class KnownAE:
    """A peer we may have to reach (e.g. an N-EVENT-REPORT subscriber)."""

    ae_title: str
    address: str
    port: int
    mtls: bool = False


@dataclass(frozen=True)
class ServeConfig:
    """The effective `tdwii serve` configuration; `sources` says where each value came from.

    `port=None` means "the default for the transport": 2762 with TLS, 11112 without.
    """

    ae_title: str = "UPSSCP"
    port: int | None = None
    bind_address: str = ""
    max_pdu: int = 16382
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    mutual_tls: bool = False
    ca_certificate: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    database_location: Path = Path("tdwii.sqlite")
    ae_config: Path | None = None
    max_associations: int = 10
    max_associations_per_host: int | None = None  # None: half of max_associations (at least 1)
    max_pending: int = 512  # connections not associated yet (TLS handshake, A-ASSOCIATE-RQ)
    max_pending_per_host: int = 16
    max_message_size: int = 4 << 20  # longest data set of one DIMSE request we take
    require_called_aet: bool = False  # refuse an A-ASSOCIATE-RQ addressed to another AE title
    handshake_timeout: float = 10.0
    retention: str | None = None  # purge final workitems after this (e.g. 30d); None keeps
    shutdown_grace: float = 10.0  # seconds running associations get to finish at a stop
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def effective_max_associations_per_host(self) -> int:
        """Associations one host may hold at once: as configured, else half the total."""
        if self.max_associations_per_host is not None:
            return min(self.max_associations_per_host, self.max_associations)
        return max(1, self.max_associations // 2)

    def effective_port(self, tls_enabled: bool) -> int:
        """The port to listen on: as configured, else 2762 with TLS and 11112 without."""
        if self.port is not None:
            return self.port
        return TLS_PORT if tls_enabled else PLAIN_PORT

    @property
    def retention_seconds(self) -> float | None:
        """`retention` in seconds (None: keep final workitems)."""
        return parse_retention(self.retention)

    def rows(self) -> list[tuple[str, str, str]]:
        """(key, value, source) for display, e.g. at -v."""
        out = []
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            out.append(
                (f.name, "" if value is None else str(value), self.sources.get(f.name, "default"))
            )
        return out


def _bad(path: Path, key: str, value: str, expected: str) -> TdwiiError:
    return TdwiiError(
        f"config file {path}: {key} = {value!r} is not {expected}",
        hint="fix the value or remove the key",
    )


def _convert(path: Path, key: str, raw: str) -> Any:
    text = raw.strip()
    if key in INT_KEYS:
        try:
            value = int(text)
        except ValueError:
            raise _bad(path, key, text, "a whole number") from None
        if key == "port" and not 0 <= value <= 65535:
            raise _bad(path, key, text, "a TCP port (0-65535)")
        if key == "max_pdu" and value < 0:
            raise _bad(path, key, text, "a PDU size (0 for unlimited)")
        if key in INT_KEYS[2:] and value < 1:
            raise _bad(path, key, text, "at least 1")
        return value
    if key in FLOAT_KEYS:
        try:
            number = float(text)
        except ValueError:
            raise _bad(path, key, text, "a number of seconds") from None
        if number <= 0:
            raise _bad(path, key, text, "a positive number of seconds")
        return number
    if key in BOOL_KEYS:
        lowered = text.lower()
        if lowered in ("1", "yes", "true", "on"):
            return True
        if lowered in ("0", "no", "false", "off", ""):
            return False
        raise _bad(path, key, text, "true or false")
    if key in PATH_KEYS:
        return Path(text) if text else None
    return text


def read_ini(path: str | Path) -> dict[str, Any]:
    """The known keys of an INI configuration file, converted and checked."""
    path = Path(path)
    parser = configparser.ConfigParser(interpolation=None)
    data = read_bytes(path, "config file", missing_hint="check the --config path")
    try:
        parser.read_string(data.decode("utf-8"), source=str(path))
    except UnicodeDecodeError:
        raise TdwiiError(f"config file {path} is not UTF-8 text") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise TdwiiError(
            f"config file {path} is not an INI file: {first}",
            hint="keys go under a [DEFAULT] section, one `key: value` per line",
        ) from None
    section = parser.defaults()
    unknown = sorted(set(section) - set(KNOWN_KEYS) - set(IGNORED_KEYS))
    if unknown:
        raise TdwiiError(
            f"config file {path}: unknown key {unknown[0]}",
            hint="known keys: " + ", ".join(KNOWN_KEYS),
        )
    values: dict[str, Any] = {}
    for key in KNOWN_KEYS:
        if key in section:
            values[key] = _convert(path, key, section[key])
    return values


def parse_retention(text: str | None) -> float | None:
    """'7d', '12h', '30m', '90s' or a number of seconds -> seconds; None/''/'keep' -> None."""
    if text is None:
        return None
    value = str(text).strip().lower()
    if value in ("", "keep", "forever", "none"):
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    factor = 1
    if value[-1] in units:
        factor = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise ValueError(
            f"retention {text!r} is not a duration like 30d, 12h, 15m or 90s"
        ) from None
    if number < 0:
        raise ValueError(f"retention {text!r} is negative")
    return number * factor


def effective_config(
    ini: dict[str, Any] | None = None, command_line: dict[str, Any] | None = None
) -> ServeConfig:
    """Defaults, then the INI values, then the command line values that were given (not None)."""
    config = ServeConfig()
    sources: dict[str, str] = {}
    for origin, values in (("config file", ini or {}), ("command line", command_line or {})):
        given = {k: v for k, v in values.items() if v is not None}
        config = replace(config, **given)
        sources.update(dict.fromkeys(given, origin))
    try:
        config.retention_seconds  # noqa: B018 (checked once here, used at start)
    except ValueError as exc:
        raise TdwiiError(str(exc), hint="e.g. --retention 30d") from None
    return replace(config, sources=sources)


def _entry(path: Path, where: str, title: Any, item: dict[str, Any]) -> KnownAE:
    def fail(message: str) -> TdwiiError:
        return TdwiiError(
            f"AE config {path}: {where}: {message}",
            hint='each entry needs "AETitle", "IPAddr", "Port" (and optionally "mTLS")',
        )

    if not isinstance(title, str) or not title.strip():
        raise fail("AETitle missing or not a string")
    title = title.strip()
    if ae_title_problem(title) is not None:
        raise fail(f"AETitle {title!r} is not a DICOM AE title (at most 16 ASCII characters)")
    address = item.get("IPAddr")
    if not isinstance(address, str) or not address.strip():
        raise fail(f"{title}: IPAddr missing or not a string")
    port = item.get("Port")
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise fail(f"{title}: Port {port!r} is not a TCP port (1-65535)")
    mtls = item.get("mTLS", False)
    if not isinstance(mtls, bool):
        raise fail(f"{title}: mTLS {mtls!r} is not true or false")
    return KnownAE(ae_title=title, address=address.strip(), port=port, mtls=mtls)


def load_application_entities(path: str | Path) -> dict[str, KnownAE]:
    """Read and check an `ApplicationEntities.json`; AE title -> `KnownAE`."""
    path = Path(path)
    raw = read_bytes(path, "AE config", missing_hint="check the --ae-config path")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise TdwiiError(f"AE config {path} is not valid JSON{detail}") from None
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
            hint='e.g. [{"AETitle": "TDD", "IPAddr": "127.0.0.1", "Port": 11113, "mTLS": true}]',
        )
    known: dict[str, KnownAE] = {}
    for where, title, item in entries:
        entry = _entry(path, where, title, item)
        if entry.ae_title in known:
            raise TdwiiError(f"AE config {path}: {entry.ae_title} is listed twice")
        known[entry.ae_title] = entry
    return known


def resolve_tls(config: ServeConfig, values: dict[str, Any]) -> TlsOptions:
    """The server's `TlsOptions` from the TLS option values and the INI file.

    The command line decides the mode (`--mtls`/`--tls`); without either, the INI
    file's `mutual_tls` does. CA, certificate and key given on the command line
    win; otherwise the INI paths are used; otherwise `tdwii pki init`'s layout.
    INI paths are ignored when TLS is off (upsscp.py files keep them with mutual_tls off).
    """
    from tdwii_cli.tls.options import resolve

    values = dict(values)
    if not values.get("mtls") and not values.get("tls") and config.mutual_tls:
        values["mtls"] = True
    if values.get("mtls") or values.get("tls"):
        if not values.get("ca") and config.ca_certificate is not None:
            values["ca"] = [config.ca_certificate]
        if values.get("cert") is None and config.certificate is not None:
            values["cert"] = config.certificate
        if values.get("key") is None and config.private_key is not None:
            values["key"] = config.private_key
    return resolve("server", **values)
