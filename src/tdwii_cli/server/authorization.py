"""Authorization in the worklist manager: the one place the acceptor and the UPS service ask
whether a peer may associate as an AE title, and whether it may do an operation.

With `--authorize` (`enforce`), an A-ASSOCIATE-RQ whose calling AE title is not bound to
the certificate presented is rejected (rejected-permanent, calling AE title not
recognized), and each operation is judged by `tdwii_cli.access.roles.decide()`: a
refusal is 0124 (Refused: Not authorized; C-FIND, whose PS3.7 statuses have no such
value, gets C124, a "Failed: Unable to process" code of ours), one WARNING line naming
the AE title, the certificate's subject and fingerprint and the peer's address, and a
Security Alert. Before an operation that changes a workitem or a subscription, the
association's standing is checked again: its certificate not expired, not in the CRL
now in use, and its AE title still bound to it in the AE configuration now in use.

Without `--authorize` everything is allowed, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from tdwii_cli.access.aefile import KnownAE
from tdwii_cli.access.policy import AccessPolicy
from tdwii_cli.access.roles import ALLOWED, Operation, Principal, Verdict, decide
from tdwii_cli.audit.messages import Code
from tdwii_cli.dicom import status as st
from tdwii_cli.errors import TdwiiError
from tdwii_cli.net import dimse
from tdwii_cli.net import log as netlog
from tdwii_cli.scp.messages import Reply, Request
from tdwii_cli.server.auditing import NODE_AUTHENTICATION, USE_OF_RESTRICTED_FUNCTION, Auditor
from tdwii_cli.server.config import ServeConfig
from tdwii_cli.tls.options import TlsOptions
from tdwii_cli.tls.peer import PeerIdentity
from tdwii_cli.tls.revocation import CrlFacts

log = logging.getLogger("tdwii.serve")


def certificate_words(identity: PeerIdentity | None) -> str:
    """The certificate in a log line: subject and SHA-256 fingerprint (or that there is none)."""
    if identity is None or not identity.has_certificate:
        return "no certificate"
    return f"certificate {netlog.printable(identity.subject or '?')} SHA-256 {identity.fingerprint}"


class Authorizer:
    """See the module docstring."""

    def __init__(
        self,
        entries: Mapping[str, KnownAE],
        *,
        enforce: bool,
        auditor: Auditor | None = None,
        crl: Callable[[], CrlFacts | None] | None = None,
    ) -> None:
        self.policy = AccessPolicy(entries)
        self.enforce = enforce
        self.auditor = auditor or Auditor.disabled()
        self.crl = crl or (lambda: None)
        self._expiry: dict[str, float | None] = {}  # fingerprint -> notAfter, parsed once

    def reload(self, entries: Mapping[str, KnownAE]) -> None:
        """Use a new AE configuration from the next decision on."""
        self.policy = AccessPolicy(entries)

    # -- associations ------------------------------------------------------------------

    def admit(self, calling_ae: str, identity: PeerIdentity) -> str | None:
        """Why the peer may not associate as `calling_ae` (None: it may)."""
        if not self.enforce or self.policy.admits(calling_ae, identity):
            return None
        why = (
            f"calling AE title {netlog.printable(calling_ae)} is not bound to its certificate"
            if identity.has_certificate
            else "it presented no certificate"
        )
        log.warning(
            "%s: association rejected: %s (calling AE %s, %s)",
            identity.address,
            why,
            netlog.printable(calling_ae),
            certificate_words(identity),
        )
        self.auditor.alert(
            NODE_AUTHENTICATION,
            f"association rejected: {why}",
            identity=identity,
            address=identity.host,
            ae_title=calling_ae,
        )
        return why

    def refused(self, identity: PeerIdentity, reason: str) -> None:
        """A connection refused before associating (handshake, certificate): audited."""
        self.auditor.alert(
            NODE_AUTHENTICATION,
            f"connection refused: {reason}",
            identity=identity,
            address=identity.host,
        )

    # -- operations --------------------------------------------------------------------

    def principal(self, request: Request) -> Principal:
        return self.policy.principal(request.calling_ae, request.peer)

    def check(
        self,
        request: Request,
        operation: Operation,
        *,
        holder: str | None = None,
        receiving: str | None = None,
    ) -> Reply | None:
        """None when `request` may do `operation`; else the refusal to answer with (logged
        and audited). `holder`: who claimed the workitem; `receiving`: a subscription's AE."""
        if not self.enforce:
            return None
        verdict = self._standing(request) if operation.changes else ALLOWED
        kind = NODE_AUTHENTICATION if not verdict.allowed else USE_OF_RESTRICTED_FUNCTION
        if verdict.allowed:
            verdict = decide(self.principal(request), operation, holder=holder, receiving=receiving)
            if verdict.allowed:
                return None
        return self._refuse(request, operation, verdict, kind)

    def _standing(self, request: Request) -> Verdict:
        """Whether the association's certificate still carries rights, and if not why."""
        identity = request.peer
        if identity is None or not identity.has_certificate:
            return Verdict(False, "no certificate", "no certificate")
        expires = self._expires(identity)
        if expires is not None and expires < time.time():
            return Verdict(False, "its certificate has expired", "certificate expired")
        facts = self.crl()
        if facts is not None:
            if identity.serial is not None and identity.serial in facts.serials:
                return Verdict(
                    False, f"its certificate is revoked (CRL {facts.path})", "certificate revoked"
                )
            if facts.next_update is not None and facts.next_update.timestamp() <= time.time():
                return Verdict(
                    False, f"the CRL {facts.path} has passed its next update", "CRL out of date"
                )
        if not self.policy.admits(request.calling_ae, identity):
            return Verdict(
                False,
                f"the AE configuration no longer binds {netlog.printable(request.calling_ae)} "
                "to its certificate",
                "AE title no longer bound to the certificate",
            )
        return ALLOWED

    def _expires(self, identity: PeerIdentity) -> float | None:
        key = identity.fingerprint or ""
        if key not in self._expiry:
            if len(self._expiry) >= 1024:
                self._expiry.clear()
            self._expiry[key] = identity.not_after
        return self._expiry[key]

    def _refuse(
        self, request: Request, operation: Operation, verdict: Verdict, kind: Code
    ) -> Reply:
        find = request.command.field == dimse.C_FIND_RQ
        status = st.FIND_NOT_AUTHORIZED if find else st.NOT_AUTHORIZED
        identity = request.peer
        where = identity.address if identity is not None else "?"
        log.warning(
            "%s: %s refused (0x%04X, not authorized): %s; calling AE %s, %s",
            where,
            request.command.name,
            status,
            verdict.reason,
            netlog.printable(request.calling_ae),
            certificate_words(identity),
        )
        self.auditor.alert(
            kind,
            f"{request.command.name} ({operation.value}) refused: {verdict.reason}",
            identity=identity,
            address=identity.host if identity is not None else "",
            ae_title=request.calling_ae,
        )
        return Reply(status, f"not authorized: {verdict.short}")


def check_authorization(
    config: ServeConfig, tls: TlsOptions, entries: Mapping[str, KnownAE]
) -> None:
    """Refuse to start (one line) when `--authorize` cannot work: it needs mutual TLS (a
    certificate to bind) and an AE configuration; warn about entries nobody can use."""
    if not config.authorize:
        return
    if not tls.mutual:
        raise TdwiiError(
            "--authorize needs --mtls: without client certificates no AE title can be bound",
            hint="add --mtls (or mutual_tls: true in the INI file)",
        )
    if config.ae_config is None:
        raise TdwiiError(
            "--authorize needs --ae-config: the AE configuration binds certificates and roles",
            hint='e.g. [{"AETitle": "TDD1", "Certificates": ["CN=tdd1"], "Roles": ["perform"]}]',
        )
    for entry in entries.values():
        if not entry.certificates:
            log.info(
                "AE config %s: %s has no Certificates: with --authorize no peer can use it",
                config.ae_config,
                entry.ae_title,
            )


def markdown_table() -> str:
    """The roles table of the README: each operation, its message, the role, the refusal."""
    from tdwii_cli.access.roles import TABLE

    rows = [
        "| operation | DIMSE | role needed | refused with |",
        "|---|---|---|---|",
    ]
    for what, dimse_name, role in TABLE:
        if dimse_name == "C-ECHO":
            refusal = "A-ASSOCIATE-RJ, rejected-permanent, calling AE title not recognized"
        elif dimse_name == "C-FIND":
            refusal = "`C124` (Failed: Unable to process; PS3.7 gives C-FIND no 0124)"
        else:
            refusal = "`0124` Refused: Not authorized"
        rows.append(f"| {what} | {dimse_name} | {role} | {refusal} |")
    return "\n".join(rows)
