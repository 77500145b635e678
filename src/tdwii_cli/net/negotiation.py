"""The acceptor's side of association negotiation: what we accept, prepared once, and the
answer (A-ASSOCIATE-AC or RJ) to each A-ASSOCIATE-RQ.

`Acceptance` is built at start-up from the abstract syntaxes we serve, the
transfer syntaxes in our order of preference, our AE title and maximum PDU.
`Acceptance.answer(rq)` checks the request (protocol version, application
context, called and calling AE titles, the requestor's maximum PDU) and returns
either a `Refusal` (the A-ASSOCIATE-RJ fields and why) or a `Negotiated` (the AC
bytes and the contexts accepted, by id).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tdwii_cli.dicom.uids import APPLICATION_CONTEXT
from tdwii_cli.net import pdu

# A-ASSOCIATE-RJ (PS3.8 table 9-21): result, source, reason
PERMANENT, TRANSIENT = 1, 2
SERVICE_USER, SERVICE_PROVIDER_ACSE, SERVICE_PROVIDER_PRESENTATION = 1, 2, 3
MIN_PEER_PDU = 64  # a requestor that takes less cannot carry a command set


@dataclass(frozen=True)
class Refusal:
    """An A-ASSOCIATE-RJ to send: its fields and the reason in words (for the log)."""

    result: int
    source: int
    reason: int
    words: str

    def encode(self) -> bytes:
        return pdu.associate_rj(self.result, self.source, self.reason)


LOCAL_LIMIT = Refusal(TRANSIENT, SERVICE_PROVIDER_PRESENTATION, 2, "local limit exceeded")
CALLING_NOT_RECOGNIZED = Refusal(PERMANENT, SERVICE_USER, 3, "calling AE title not recognized")


@dataclass(frozen=True)
class AcceptedContext:
    """A presentation context we accepted: id, abstract and transfer syntax."""

    id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass
class Negotiated:
    """An accepted association: the AC to send and what it agreed."""

    ac: bytes
    contexts: dict[int, AcceptedContext]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # abstract, reason
    peer_max_pdu: int = 0


_NOT_IN_AE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")  # control, backslash, non-ASCII


def _ae_problem(raw: bytes) -> str:
    """Why 16 bytes are not an AE title ('' when they are one)."""
    if not raw.strip(b" "):
        return "is empty"
    if _NOT_IN_AE.search(raw):
        return "holds control characters, a backslash or non-ASCII bytes"
    return ""


# the A-ASSOCIATE-AC (its AE titles to be replaced), the contexts accepted and rejected
_Decision = tuple[bytes, dict[int, AcceptedContext], list[tuple[str, str]]]


class Acceptance:
    """What we accept, prepared at start-up (see the module docstring)."""

    def __init__(
        self,
        ae_title: str,
        abstract_syntaxes: Sequence[str],
        transfer_syntaxes: Sequence[str],
        max_pdu: int,
        *,
        require_called: bool = False,
    ) -> None:
        self.ae_title = ae_title
        self.max_pdu = max_pdu
        self.require_called = require_called
        self._rank = {ts: i for i, ts in enumerate(transfer_syntaxes)}
        self._abstract = frozenset(abstract_syntaxes)
        self._decided: dict[object, _Decision] = {}  # a device proposes the same each time

    def _decide(self, rq: pdu.AssociateRQ) -> _Decision:
        """The AC for `rq`'s proposals: each context's result and the roles."""
        results: list[tuple[int, int, str]] = []
        accepted: dict[int, AcceptedContext] = {}
        rejected: list[tuple[str, str]] = []
        roles: list[tuple[str, int, int]] = []
        for cx in rq.contexts:
            if cx.abstract_syntax not in self._abstract:
                results.append((cx.id, 3, cx.transfer_syntaxes[0]))
                rejected.append((cx.abstract_syntax, pdu.CONTEXT_RESULTS[3]))
                continue
            usable = [ts for ts in cx.transfer_syntaxes if ts in self._rank]
            if not usable:
                results.append((cx.id, 4, cx.transfer_syntaxes[0]))
                rejected.append((cx.abstract_syntax, pdu.CONTEXT_RESULTS[4]))
                continue
            role = rq.roles.get(cx.abstract_syntax)
            if role is not None and not role[0]:  # the requestor would only be an SCP
                results.append((cx.id, 1, cx.transfer_syntaxes[0]))
                rejected.append((cx.abstract_syntax, "we are only its SCP"))
                continue
            ts = min(usable, key=self._rank.__getitem__)
            results.append((cx.id, 0, ts))
            accepted[cx.id] = AcceptedContext(cx.id, cx.abstract_syntax, ts)
        for uid, (scu, _scp) in rq.roles.items():
            if uid in self._abstract and scu:
                roles.append((uid, 1, 0))  # requestor as SCU, never as SCP
        return pdu.associate_ac(rq, results, self.max_pdu, roles), accepted, rejected

    def answer(self, rq: pdu.AssociateRQ) -> Negotiated | Refusal:
        """The A-ASSOCIATE-AC for `rq`, or why it is refused."""
        if not rq.protocol_version & 1:
            return Refusal(PERMANENT, SERVICE_PROVIDER_ACSE, 2, "protocol version not supported")
        if rq.application_context != APPLICATION_CONTEXT:
            return Refusal(PERMANENT, SERVICE_USER, 2, "application context name not supported")
        problem = _ae_problem(rq.raw_calling)
        if problem:
            return Refusal(PERMANENT, SERVICE_USER, 3, f"the calling AE title {problem}")
        problem = _ae_problem(rq.raw_called)
        if problem:
            return Refusal(PERMANENT, SERVICE_USER, 7, f"the called AE title {problem}")
        if self.require_called and rq.called != self.ae_title:
            return Refusal(
                PERMANENT, SERVICE_USER, 7, f"called AE title is not ours ({self.ae_title})"
            )
        if 0 < rq.max_pdu < MIN_PEER_PDU:
            return Refusal(
                PERMANENT, SERVICE_USER, 1, f"the requestor's maximum PDU {rq.max_pdu} is too small"
            )
        key = (tuple(rq.contexts), tuple(sorted(rq.roles.items())))
        decided = self._decided.get(key)
        if decided is None:
            decided = self._decide(rq)
            if len(self._decided) >= 256:
                self._decided.clear()
            self._decided[key] = decided
        template, accepted, rejected = decided
        # the AC differs from one request to the next only in the two AE titles
        ac = template[:10] + rq.raw_called.ljust(16) + rq.raw_calling.ljust(16) + template[42:]
        return Negotiated(
            ac=ac,
            contexts=dict(accepted),
            rejected=list(rejected),
            peer_max_pdu=rq.max_pdu,
        )
