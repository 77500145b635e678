"""`tdwii serve` configuration: the INI file, the command line on top of it, and the known
application entities (`ApplicationEntities.json`).

The INI file is that of the `upsscp.py` worklist manager tdwii replaces: the
server's keys under `[DEFAULT]` (the list, with each key's command-line twin, is
`tdwii_cli.server.inikeys`), every other section a move destination named by its
AE title with `address` and `port` (checked; tdwii serves no C-MOVE). An unknown
key, a server key under another section, or a section that is no move
destination is refused: a setting is never dropped silently. Relative paths are
relative to the current folder.

`ApplicationEntities.json` (`tdwii_cli.access.aefile`) lists the known AEs: where each
receives event reports, the certificates bound to it and its roles.

Every problem is one `TdwiiError` line naming the file and the key.
"""

from __future__ import annotations

import configparser
import difflib
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdwii_cli.access import aefile
from tdwii_cli.access.aefile import KnownAE
from tdwii_cli.dicom.values import ae_title_problem
from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import read_bytes
from tdwii_cli.server import inikeys

if TYPE_CHECKING:
    from tdwii_cli.tls.options import TlsOptions

log = logging.getLogger("tdwii.serve")

PLAIN_PORT = 11112
TLS_PORT = 2762


def _of(kind: str) -> tuple[str, ...]:
    return tuple(k.name for k in inikeys.KEYS if k.kind == kind)


INT_KEYS = _of("int")
FLOAT_KEYS = _of("float")
BOOL_KEYS = _of("bool")
PATH_KEYS = _of("path")
STR_KEYS = _of("str")
LIST_KEYS = _of("list")
KNOWN_KEYS = tuple(k.name for k in inikeys.KEYS)
IGNORED_KEYS = tuple(inikeys.IGNORED)  # upsscp.py keys tdwii does not use
_AT_LEAST_ONE = (
    "max_associations",
    "max_associations_per_host",
    "max_pending",
    "max_pending_per_host",
    "max_message_size",
    "audit_spool_limit",
)


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
    log_summary: float = 10.0  # repeated warnings from one network: counted, told this often
    authorize: bool = False  # enforce the AE configuration's certificate bindings and roles
    audit: tuple[str, ...] = ()  # audit trail destinations (file, syslog+tls://, udp://)
    audit_ca: Path | None = None
    audit_cert: Path | None = None
    audit_key: Path | None = None
    audit_spool: Path | None = None  # None: next to the database (DB.audit)
    audit_spool_limit: int = 100_000
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
    def effective_audit_spool(self) -> Path:
        """Where audit messages wait to be sent: as configured, else next to the database."""
        if self.audit_spool is not None:
            return self.audit_spool
        return self.database_location.with_name(self.database_location.name + ".audit")

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
            if isinstance(value, tuple):
                value = " ".join(value) or None
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
        if key in _AT_LEAST_ONE and value < 1:
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
    if key in LIST_KEYS:
        return tuple(part for part in text.replace(",", " ").split() if part)
    return text


def read_ini(path: str | Path) -> dict[str, Any]:
    """The `[DEFAULT]` keys of an INI configuration file, converted and checked. Every other
    section must be an upsscp.py move destination (address, port); anything else, and an
    unknown key anywhere, is refused with one line naming the file, the section and the key."""
    path = Path(path)
    # No default section: `[DEFAULT]` is read as a section of its own, so that a key
    # under another section is seen there (configparser would copy DEFAULT into each).
    parser = configparser.ConfigParser(interpolation=None, default_section="\0")
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
    values: dict[str, Any] = {}
    for name in parser.sections():
        section = parser[name]
        if name == inikeys.SERVER_SECTION:
            for key in section:
                if key not in KNOWN_KEYS and key not in IGNORED_KEYS:
                    raise _unknown(path, name, key, KNOWN_KEYS + IGNORED_KEYS)
            values.update({k: _convert(path, k, section[k]) for k in KNOWN_KEYS if k in section})
        else:
            _move_destination(path, name, section)
    return values


def _unknown(path: Path, section: str, key: str, known: tuple[str, ...]) -> TdwiiError:
    close = difflib.get_close_matches(key, known, n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    return TdwiiError(
        f"config file {path}: [{section}] unknown key {key}{guess}",
        hint="`tdwii serve --help` lists every key",
    )


def _move_destination(path: Path, name: str, section: configparser.SectionProxy) -> None:
    """Check an upsscp.py move destination section; tdwii serves no C-MOVE, so it is unused."""
    where = f"config file {path}: [{name}]"
    for key in section:
        if key in inikeys.MOVE_DESTINATION_KEYS:
            continue
        if key in KNOWN_KEYS or key in IGNORED_KEYS:
            raise TdwiiError(
                f"{where} {key}: the server's keys go under [DEFAULT]; other sections are "
                "upsscp.py move destinations (address, port)",
                hint=f"move {key} under [DEFAULT]",
            )
        raise _unknown(path, name, key, inikeys.MOVE_DESTINATION_KEYS)
    problem = ae_title_problem(name)
    if problem is not None:
        raise TdwiiError(
            f"{where} is not a move destination: {problem}",
            hint="sections other than [DEFAULT] are named by the destination's AE title",
        )
    port = section.get("port", "").strip()
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise TdwiiError(f"{where} port = {port!r} is not a TCP port (1-65535)")
    log.info("%s: a move destination of upsscp.py, unused (tdwii serves no C-MOVE)", where)


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


def load_application_entities(path: str | Path) -> dict[str, KnownAE]:
    """Read and check the AE configuration (`tdwii_cli.access.aefile`); AE title -> `KnownAE`."""
    return aefile.load(path)


def resolve_tls(
    config: ServeConfig, values: dict[str, Any], config_file: Path | None = None
) -> TlsOptions:
    """The server's `TlsOptions` from the TLS option values and the INI file.

    The command line decides the mode (`--mtls`/`--tls`); without either, the INI
    file's `mutual_tls` does. CA, certificate and key given on the command line
    win; otherwise the INI paths are used (a missing one is reported with its INI
    key); otherwise `tdwii pki init`'s layout. INI paths are ignored when TLS is off
    (upsscp.py files keep them with mutual_tls off).
    """
    from tdwii_cli.tls.options import resolve

    values = dict(values)
    named_by: dict[str, str] = {}
    where = f"in {config_file} [DEFAULT]" if config_file is not None else "in the config file"
    if not values.get("mtls") and not values.get("tls") and config.mutual_tls:
        values["mtls"] = True
    if values.get("mtls") or values.get("tls"):
        for name, key, path in (
            ("ca", "ca_certificate", config.ca_certificate),
            ("cert", "certificate", config.certificate),
            ("key", "private_key", config.private_key),
        ):
            if not values.get(name) and path is not None:
                values[name] = [path] if name == "ca" else path
                named_by[name] = f"{key} {where}"
    return resolve("server", **values, named_by=named_by)
