"""The UPS operations of an SCU over one association: C-FIND, N-GET, N-SET, N-ACTION.

`connect(peer, sop_classes)` opens an association proposing the UPS SOP Classes
an operation needs (Explicit VR Little Endian preferred, Implicit offered); on the
`UpsClient` it yields, each method sends one request and returns its `Response`
(C-FIND: yields them, pending ones first). The Requested SOP Class UID of N-GET,
N-SET and N-ACTION is UPS Push: every UPS instance is one (PS3.4 CC.1); the
presentation context is the SOP Class that defines the operation. Statuses are
returned, not judged: `tdwii_cli.client.statuses` does that.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tdwii_cli.dicom import rawdataset as raw
from tdwii_cli.dicom.status import is_pending
from tdwii_cli.dicom.uids import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    UPS_PULL,
    UPS_PUSH,
    UPS_WATCH,
    uid_name,
)
from tdwii_cli.net import dimse
from tdwii_cli.net.dimse import Command

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from tdwii_cli.client.peer import Peer
    from tdwii_cli.net.association import AcceptedContext, Association

log = logging.getLogger("tdwii.ups")

PREFERRED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)


@dataclass
class Response:
    """One response: its status, Error Comment, data set bytes and their transfer syntax."""

    command: Command
    data: bytes | None = field(default=None, repr=False)
    transfer_syntax: str = EXPLICIT_VR_LE

    @property
    def status(self) -> int:
        return self.command.status or 0

    @property
    def comment(self) -> str:
        return self.command.error_comment

    def explicit(self) -> bytes | None:
        """The data set as Explicit VR Little Endian bytes (converted when it came otherwise)."""
        if self.data is None or self.transfer_syntax == EXPLICIT_VR_LE:
            return self.data
        from tdwii_cli.dicom import codec

        return codec.transcode(self.data, self.transfer_syntax)

    def dataset(self) -> Dataset | None:
        """The data set decoded (pydicom), or None; `ValueError` when it is not one (an
        Explicit VR LE one is walked first: pydicom reads a value cut short as it is)."""
        if self.data is None:
            return None
        from tdwii_cli.dicom import codec

        if self.transfer_syntax == EXPLICIT_VR_LE:
            raw.scan(self.data)  # RawError (a ValueError): a length that lies
        return codec.decode(self.data, self.transfer_syntax)


class UpsClient:
    """The UPS operations on one open association."""

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc

    @property
    def peer(self) -> str:
        return self.assoc.peer

    def _context(self, candidates: Sequence[str]) -> AcceptedContext:
        for sop_class in candidates[:-1]:
            if any(cx.abstract_syntax == sop_class for cx in self.assoc.accepted_contexts):
                return self.assoc.context(sop_class, PREFERRED)
        return self.assoc.context(candidates[-1], PREFERRED)

    def _encode(self, data: bytes | Dataset | None, context: AcceptedContext) -> bytes | None:
        """Data set bytes for `context` (bytes are Explicit VR Little Endian)."""
        if data is None:
            return None
        if isinstance(data, bytes) and context.transfer_syntax == EXPLICIT_VR_LE:
            return data  # no pydicom on the usual path
        from tdwii_cli.dicom import codec

        if isinstance(data, bytes):
            return codec.transcode(data, EXPLICIT_VR_LE, context.transfer_syntax)
        return codec.encode(data, context.transfer_syntax)

    def _one(
        self, command: Command, data: bytes | Dataset | None, context: AcceptedContext
    ) -> Response:
        payload = self._encode(data, context)
        if payload is not None:
            command = _with_dataset(command)
        log.info(
            "%s: %s %s%s",
            self.peer,
            command.name,
            command.sop_instance,
            f" (action {command.action_type})" if command.action_type else "",
        )
        message = next(self.assoc.request(command, payload, context))
        return Response(message.command, message.dataset, context.transfer_syntax)

    # -- the operations ------------------------------------------------------------------

    def find(
        self, identifier: bytes, sop_class: str
    ) -> Iterator[tuple[Command, AcceptedContext, Response]]:
        """C-FIND: (request, context, response) for each response, the final one last."""
        request, context = self.find_request(identifier, sop_class)
        while True:
            rsp = self.find_response(request, context)
            yield request, context, rsp
            if not is_pending(rsp.status):
                return

    def find_request(self, identifier: bytes, sop_class: str) -> tuple[Command, AcceptedContext]:
        """Send a C-FIND-RQ; the request and its context, for `find_response` and `cancel`."""
        context = self.assoc.context(sop_class, PREFERRED)
        payload = self._encode(identifier, context)
        request = Command(
            dimse.C_FIND_RQ,
            message_id=self.assoc.next_message_id(),
            sop_class=sop_class,
            priority=0,
            has_dataset=True,
        )
        log.info("%s: C-FIND-RQ on %s", self.peer, uid_name(sop_class))
        self.assoc.send(request, payload, context)
        return request, context

    def find_response(
        self, request: Command, context: AcceptedContext, timeout: float | None = None
    ) -> Response:
        """The next response to the C-FIND `request` (Pending ones first, then the final),
        within `timeout` (default the DIMSE timeout; `DeadlineMissed` after it)."""
        message = self.assoc.response(request, timeout)
        return Response(message.command, message.dataset, context.transfer_syntax)

    def cancel(self, request: Command, context: AcceptedContext) -> None:
        """C-CANCEL-RQ for a C-FIND still streaming."""
        log.info("%s: C-CANCEL-RQ for C-FIND id=%d", self.peer, request.message_id or 0)
        self.assoc.cancel(request, context)

    def get(self, uid: str, attributes: Sequence[int] = ()) -> Response:
        """N-GET of workitem `uid` (all attributes when none are listed)."""
        command = Command(
            dimse.N_GET_RQ,
            message_id=self.assoc.next_message_id(),
            sop_class=UPS_PUSH,
            sop_instance=uid,
            attribute_identifiers=tuple(attributes),
        )
        return self._one(command, None, self._context((UPS_PULL, UPS_WATCH)))

    def set(self, uid: str, modification: bytes | Dataset) -> Response:
        """N-SET of workitem `uid` with `modification` (Transaction UID included)."""
        command = Command(
            dimse.N_SET_RQ,
            message_id=self.assoc.next_message_id(),
            sop_class=UPS_PUSH,
            sop_instance=uid,
        )
        return self._one(command, modification, self._context((UPS_PULL,)))

    def action(
        self, uid: str, action_type: int, info: bytes | Dataset | None, on: Sequence[str]
    ) -> Response:
        """N-ACTION `action_type` on `uid`, on the first of the SOP Classes `on` accepted."""
        command = Command(
            dimse.N_ACTION_RQ,
            message_id=self.assoc.next_message_id(),
            sop_class=UPS_PUSH,
            sop_instance=uid,
            action_type=action_type,
        )
        return self._one(command, info, self._context(on))


def _with_dataset(command: Command) -> Command:
    from dataclasses import replace

    return replace(command, has_dataset=True)


@contextmanager
def connect(
    peer: Peer, sop_classes: Sequence[str], required: Sequence[str] | None = None
) -> Iterator[UpsClient]:
    """An association with `peer` proposing `sop_classes` (each one required unless
    `required` names which must be accepted)."""
    from tdwii_cli.net.association import propose

    contexts = propose(list(dict.fromkeys(sop_classes)), PREFERRED, separate=True)
    with peer.associate(contexts, required) as assoc:
        yield UpsClient(assoc)
