"""What an SCP is asked and what it answers, independent of the acceptor that carries it.

The acceptor (`tdwii_cli.scp.acceptor`) turns each DIMSE request into a `Request`:
the command's fields (`tdwii_cli.net.dimse.Command`), the data set as received
with its transfer syntax, who sent it. The SCP answers
with a `Reply` (or, for C-FIND, a stream of them); a `Handler` is that function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.dataset import Dataset

from tdwii_cli.dicom import codec
from tdwii_cli.net.dimse import Command
from tdwii_cli.tls.peer import PeerIdentity


def _never() -> bool:
    return False


@dataclass
class Request:
    """One DIMSE request to the SCP."""

    command: Command
    data: bytes | None  # the data set as received (identifier, attribute list, ...), or None
    transfer_syntax: str
    calling_ae: str
    peer: PeerIdentity | None = None
    cancelled: Callable[[], bool] = _never  # C-FIND: has the requestor sent C-CANCEL?
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def sop_instance(self) -> str:
        """The Affected or Requested SOP Instance UID, without padding."""
        return self.command.sop_instance.strip()

    def dataset(self) -> Dataset | None:
        """The data set, decoded once (lazily: values convert when used); `codec.CodecError`
        when it is not a data set in its transfer syntax."""
        if self._dataset is None and self.data is not None:
            self._dataset = codec.decode(self.data, self.transfer_syntax)
        return self._dataset

    def fresh_dataset(self) -> Dataset | None:
        """A new decode of the data set (values not converted yet), or None if that fails."""
        if self.data is None:
            return None
        try:
            return codec.decode(self.data, self.transfer_syntax)
        except codec.CodecError:
            return None


@dataclass
class Reply:
    """The SCP's answer: a status (with an Error Comment), an optional data set (as a
    `Dataset`, or already encoded Explicit VR Little Endian in `data`), and the Affected
    SOP Instance UID when the SCP chose it (N-CREATE without one)."""

    status: int
    comment: str = ""
    dataset: Dataset | None = None
    sop_instance: str = ""
    data: bytes | None = field(default=None, repr=False)


Handler = Callable[[Request], Iterator[Reply]]
"""What serves an association's requests: the replies to each (pending ones first).
It must not raise: a failure is a failure status."""


class Gate(Protocol):
    """What an acceptor asks before an association, and tells of the peers it refused."""

    def admit(self, calling_ae: str, identity: PeerIdentity) -> str | None:
        """Why the peer may not associate as `calling_ae` (None: it may)."""
        ...

    def refused(self, identity: PeerIdentity, reason: str) -> None:
        """A connection was refused before any association: a failed TLS handshake, a
        client certificate unfit for TLS client authentication."""
        ...
