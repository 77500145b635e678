"""What the worklist manager audits, and where to: `Auditor` turns server facts (a request,
a workitem, a refusal) into the PS3.15 audit messages of `tdwii_cli.audit.events` and
records them in the audit trail (`--audit`). Without a destination every method
returns at once.

`build_auditor(config, tls)` checks the destinations, the spool and the TLS set-up for
`syslog+tls://` before anything is served (one-line errors): `--audit-ca`,
`--audit-cert` and `--audit-key` where given, else the server's own CA, certificate and
key, with the server's TLS profile.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from tdwii_cli.audit import events
from tdwii_cli.audit import messages as m
from tdwii_cli.audit.destinations import Destination, FileSink, Sink, TlsSink, UdpSink, parse
from tdwii_cli.audit.spool import Spool, SpoolError
from tdwii_cli.audit.trail import AuditTrail
from tdwii_cli.clock import utc_now
from tdwii_cli.dicom import codec, rawdataset, tags
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE
from tdwii_cli.errors import TdwiiError
from tdwii_cli.scp.messages import Request
from tdwii_cli.server.config import ServeConfig
from tdwii_cli.tls.options import DEFAULT_CA, DEFAULT_NODE, TlsOptions
from tdwii_cli.tls.peer import PeerIdentity
from tdwii_cli.ups.ncreate import attribute_text

log = logging.getLogger("tdwii.audit")

# re-exported for the callers' convenience: the alert kinds and outcomes they pass
NODE_AUTHENTICATION = m.NODE_AUTHENTICATION
USE_OF_RESTRICTED_FUNCTION = m.USE_OF_RESTRICTED_FUNCTION
SECURITY_CONFIGURATION = m.SECURITY_CONFIGURATION
SECURITY_ROLES_CHANGED = m.SECURITY_ROLES_CHANGED
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = m.SUCCESS, m.MINOR_FAILURE, m.SERIOUS_FAILURE


def without_transaction_uid(data: bytes, transfer_syntax: str) -> bytes:
    """A data set as received, its Transaction UID cut out (b'' when it cannot be read)."""
    if transfer_syntax == EXPLICIT_VR_LE:
        try:
            found = rawdataset.scan(data)
        except (rawdataset.RawError, ValueError, IndexError):
            return b""
        if tags.TRANSACTION_UID not in found:
            return data
        return b"".join(
            data[e.start : e.end] for tag, e in found.items() if tag != tags.TRANSACTION_UID
        )
    try:
        ds = codec.decode(data, transfer_syntax)
        if tags.TRANSACTION_UID not in ds:
            return data
        del ds[tags.TRANSACTION_UID]
        return codec.encode(ds, transfer_syntax)
    except Exception:
        return b""


def _patient(ds: Dataset | None) -> events.Patient:
    if ds is None:
        return events.Patient("")
    return events.Patient(attribute_text(ds, "PatientID"), attribute_text(ds, "PatientName"))


class Auditor:
    """See the module docstring."""

    def __init__(self, node: events.Node, trail: AuditTrail | None = None) -> None:
        self.node = node
        self.trail = trail

    @classmethod
    def disabled(cls) -> Auditor:
        """An auditor with no destination: every method returns at once."""
        return cls(events.Node("", "", 0))

    @property
    def enabled(self) -> bool:
        return self.trail is not None

    def _record(self, build: Callable[..., m.AuditMessage], *args: Any, **kwargs: Any) -> None:
        """Have `build(*args, **kwargs, when=now)` recorded: the writer builds it, so that
        a DICOM answer pays only for taking note of the facts."""
        if self.trail is not None:
            self.trail.record(functools.partial(build, *args, when=utc_now(), **kwargs))

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start sending, then record that we started."""
        if self.trail is None:
            return
        self.trail.start()
        self._record(events.application, self.node, started=True)

    def stop(self, flush: float = 2.0) -> None:
        """Record that we stop, send what can be sent within `flush` seconds, stop."""
        if self.trail is None:
            return
        self._record(events.application, self.node, started=False)
        self.trail.stop(flush)

    # -- security alerts ---------------------------------------------------------------

    def alert(
        self,
        kind: m.Code,
        description: str,
        *,
        identity: PeerIdentity | None = None,
        address: str = "",
        ae_title: str | None = None,
        subject_uri: str | None = None,
        outcome: int = m.MINOR_FAILURE,
    ) -> None:
        """A Security Alert about a peer (its certificate, address, AE title) or a file."""
        if self.trail is None:
            return
        peer = None
        if identity is not None or address:
            peer = events.Peer.of(identity, address, ae_title)
        self._record(
            events.security_alert,
            self.node,
            kind,
            description,
            peer=peer,
            subject_uri=subject_uri,
            outcome=outcome,
        )

    def reloaded(self, what: str, path: Path | None, ok: bool, detail: str, *, roles: bool) -> None:
        """The TLS set-up or the AE configuration was reread (or could not be)."""
        self.alert(
            SECURITY_ROLES_CHANGED if roles else SECURITY_CONFIGURATION,
            f"{what} {'reloaded' if ok else 'not reloaded'}: {detail}",
            subject_uri=path.resolve().as_uri() if path is not None else None,
            outcome=m.SUCCESS if ok else m.MINOR_FAILURE,
        )

    # -- queries and workitems ---------------------------------------------------------

    def _peer(self, request: Request) -> events.Peer:
        return events.Peer.of(request.peer, ae_title=request.calling_ae)

    def query(
        self,
        request: Request,
        *,
        outcome: int = m.SUCCESS,
        text: str | None = None,
        types: Sequence[m.Code] = (),
        for_ae: str | None = None,
    ) -> None:
        """A C-FIND (or a subscription change, a standing query), with its identifier."""
        if self.trail is None:
            return
        data = request.data or b""
        self._record(
            events.query,
            self.node,
            self._peer(request),
            request.command.sop_class,
            without_transaction_uid(data, request.transfer_syntax) if data else b"",
            request.transfer_syntax,
            outcome=outcome,
            outcome_text=text,
            types=types,
            for_ae=for_ae,
        )

    def workitem(
        self,
        request: Request,
        action: str,
        uid: str,
        ds: Dataset | None,
        *,
        outcome: int = m.SUCCESS,
        text: str | None = None,
        types: Sequence[m.Code] = (),
        details: Sequence[tuple[str, str]] = (),
    ) -> None:
        """A Procedure Record of what `request` did (`action` C, R or U) to workitem `uid`
        (`ds`: its attributes, for the patient and the study)."""
        if self.trail is None:
            return
        study = attribute_text(ds, "StudyInstanceUID") if ds is not None else ""
        self._record(
            events.procedure_record,
            self.node,
            self._peer(request),
            action,
            uid,
            _patient(ds),
            study_uid=study or None,
            outcome=outcome,
            outcome_text=text,
            types=types,
            details=details,
        )


# -- set-up ------------------------------------------------------------------------------


def node_of(config: ServeConfig) -> events.Node:
    return events.Node(config.ae_title, socket.gethostname(), os.getpid())


def _audit_tls(config: ServeConfig, tls: TlsOptions) -> TlsOptions:
    """The client TLS set-up towards syslog+tls repositories (see the module docstring)."""
    own = DEFAULT_NODE["server"]
    ca = (config.audit_ca,) if config.audit_ca else (tls.ca or (DEFAULT_CA,))
    cert = config.audit_cert or tls.cert or own.with_suffix(".pem")
    key = config.audit_key or (tls.key if config.audit_cert is None else None)
    key = key or own.with_suffix(".key")
    for option, path in (("--audit-ca", ca[0]), ("--audit-cert", cert), ("--audit-key", key)):
        if not Path(path).is_file():
            raise TdwiiError(
                f"{option.removeprefix('--').replace('-', ' ')} {path} not found",
                hint=f"give the file with {option} (used for syslog+tls:// audit destinations)",
            )
    password = tls.key_password_file if config.audit_key is None else None
    return replace(
        tls,
        role="client",
        mode="mtls",
        ca=tuple(Path(p) for p in ca),
        cert=Path(cert),
        key=Path(key),
        key_password_file=password,
        crl=None,
        crl_is_default=False,
        verify_hostname=tls.verify_hostname,
    )


def build_auditor(config: ServeConfig, tls: TlsOptions) -> Auditor:
    """The auditor of `tdwii serve`: its destinations checked, its spool opened."""
    node = node_of(config)
    if not config.audit:
        return Auditor(node)
    destinations: list[Destination] = []
    for text in config.audit:
        destination = parse(text)
        if any(d.text == destination.text for d in destinations):
            raise TdwiiError(f"audit destination {text} is given twice")
        destinations.append(destination)
    sinks: dict[Destination, Sink] = {}
    context = None
    for destination in destinations:
        if destination.kind == "file":
            assert destination.path is not None
            if destination.path.is_dir():
                raise TdwiiError(f"audit file {destination.path} is a folder")
            sinks[destination] = FileSink(destination.path)
        elif destination.kind == "udp":
            sinks[destination] = UdpSink(destination)
        else:
            if context is None:
                from tdwii_cli.tls.context import build_client_context

                context = build_client_context(_audit_tls(config, tls), alpn=None)
            sinks[destination] = TlsSink(destination, context)
    try:
        spool = Spool(
            config.effective_audit_spool, [d.text for d in destinations], config.audit_spool_limit
        )
    except SpoolError as exc:
        raise TdwiiError(str(exc), hint="check --audit-spool (a folder of its own)") from None
    return Auditor(node, AuditTrail(node, spool, sinks))
