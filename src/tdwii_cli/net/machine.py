"""The DICOM upper layer state machine (PS3.8 section 9.2), as the standard's table.

`State` are Sta1-Sta13, `Event` Evt1-Evt19, and `TABLE[(event, state)]` the action
PS3.8 table 9-10 gives (absent: the event cannot happen in that state, a local
programming error). `NEXT[action]` is the state after the action, where the action
alone decides it (AE-6 and AR-8 depend on a decision or the role: see
`tdwii_cli.net.upper`). The grid below is the table as printed in the standard, so
that it can be checked against it cell by cell.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    """The states of PS3.8 table 9-10."""

    IDLE = 1  # Sta1
    AWAITING_RQ = 2  # Sta2: transport connection open, awaiting A-ASSOCIATE-RQ
    AWAITING_LOCAL_ASSOCIATE_RESPONSE = 3  # Sta3
    AWAITING_TRANSPORT_OPEN = 4  # Sta4
    AWAITING_AC = 5  # Sta5: awaiting A-ASSOCIATE-AC or RJ
    ESTABLISHED = 6  # Sta6: ready for data transfer
    AWAITING_RELEASE_RP = 7  # Sta7
    AWAITING_LOCAL_RELEASE_RESPONSE = 8  # Sta8
    COLLISION_REQUESTOR_AWAITING_LOCAL = 9  # Sta9
    COLLISION_ACCEPTOR_AWAITING_RP = 10  # Sta10
    COLLISION_REQUESTOR_AWAITING_RP = 11  # Sta11
    COLLISION_ACCEPTOR_AWAITING_LOCAL = 12  # Sta12
    AWAITING_CLOSE = 13  # Sta13: association no longer exists, awaiting transport close

    __hash__ = object.__hash__  # members are singletons: hash them as such, in C

    @property
    def label(self) -> str:
        return f"Sta{self.value}"


class Event(Enum):
    """The events of PS3.8 table 9-10: local primitives, PDUs received, transport, timer."""

    ASSOCIATE_REQUEST = 1  # Evt1: local A-ASSOCIATE request
    TRANSPORT_CONFIRM = 2  # Evt2: transport connect confirmation
    AC_RECEIVED = 3  # Evt3
    RJ_RECEIVED = 4  # Evt4
    TRANSPORT_INDICATION = 5  # Evt5: a connection accepted
    RQ_RECEIVED = 6  # Evt6
    ACCEPT = 7  # Evt7: local A-ASSOCIATE response (accept)
    REJECT = 8  # Evt8: local A-ASSOCIATE response (reject)
    P_DATA_REQUEST = 9  # Evt9
    P_DATA_RECEIVED = 10  # Evt10
    RELEASE_REQUEST = 11  # Evt11: local A-RELEASE request
    RELEASE_RQ_RECEIVED = 12  # Evt12
    RELEASE_RP_RECEIVED = 13  # Evt13
    RELEASE_RESPONSE = 14  # Evt14: local A-RELEASE response
    ABORT_REQUEST = 15  # Evt15: local A-ABORT request
    ABORT_RECEIVED = 16  # Evt16
    TRANSPORT_CLOSED = 17  # Evt17
    ARTIM_EXPIRED = 18  # Evt18
    INVALID_PDU = 19  # Evt19: unrecognized or invalid PDU received

    __hash__ = object.__hash__  # members are singletons: hash them as such, in C

    @property
    def label(self) -> str:
        return f"Evt{self.value}"


# PS3.8 table 9-10, row by row ("." : no action defined: the event cannot happen there)
_GRID = """
        Sta1 Sta2 Sta3 Sta4 Sta5 Sta6 Sta7 Sta8 Sta9 Sta10 Sta11 Sta12 Sta13
Evt1    AE-1 .    .    .    .    .    .    .    .    .     .     .     .
Evt2    .    .    .    AE-2 .    .    .    .    .    .     .     .     .
Evt3    .    AA-1 AA-8 .    AE-3 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt4    .    AA-1 AA-8 .    AE-4 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt5    AE-5 .    .    .    .    .    .    .    .    .     .     .     .
Evt6    .    AE-6 AA-8 .    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-7
Evt7    .    .    AE-7 .    .    .    .    .    .    .     .     .     .
Evt8    .    .    AE-8 .    .    .    .    .    .    .     .     .     .
Evt9    .    .    .    .    .    DT-1 .    AR-7 .    .     .     .     .
Evt10   .    AA-1 AA-8 .    AA-8 DT-2 AR-6 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt11   .    .    .    .    .    AR-1 .    .    .    .     .     .     .
Evt12   .    AA-1 AA-8 .    AA-8 AR-2 AR-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt13   .    AA-1 AA-8 .    AA-8 AA-8 AR-3 AA-8 AA-8 AR-10 AR-3  AA-8  AA-6
Evt14   .    .    .    .    .    .    .    AR-4 AR-9 .     .     AR-4  .
Evt15   .    .    AA-1 AA-2 AA-1 AA-1 AA-1 AA-1 AA-1 AA-1  AA-1  AA-1  .
Evt16   .    AA-2 AA-3 .    AA-3 AA-3 AA-3 AA-3 AA-3 AA-3  AA-3  AA-3  AA-2
Evt17   .    AA-5 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4  AA-4  AA-4  AR-5
Evt18   .    AA-2 .    .    .    .    .    .    .    .     .     .     AA-2
Evt19   .    AA-1 AA-8 .    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-7
"""


def _table() -> dict[tuple[Event, State], str]:
    rows = [line.split() for line in _GRID.strip().splitlines()]
    states = [State(int(name[3:])) for name in rows[0]]
    table: dict[tuple[Event, State], str] = {}
    for row in rows[1:]:
        event = Event(int(row[0][3:]))
        for state, action in zip(states, row[1:], strict=True):
            if action != ".":
                table[(event, state)] = action
    return table


TABLE = _table()

# the state each action leads to (PS3.8 table 9-6 to 9-9); None: decided by the caller
NEXT: dict[str, State | None] = {
    "AE-1": State.AWAITING_TRANSPORT_OPEN,
    "AE-2": State.AWAITING_AC,
    "AE-3": State.ESTABLISHED,
    "AE-4": State.IDLE,
    "AE-5": State.AWAITING_RQ,
    "AE-6": None,  # Sta3 when the request is acceptable to the upper layer, else Sta13
    "AE-7": State.ESTABLISHED,
    "AE-8": State.AWAITING_CLOSE,
    "DT-1": State.ESTABLISHED,
    "DT-2": State.ESTABLISHED,
    "AR-1": State.AWAITING_RELEASE_RP,
    "AR-2": State.AWAITING_LOCAL_RELEASE_RESPONSE,
    "AR-3": State.IDLE,
    "AR-4": State.AWAITING_CLOSE,
    "AR-5": State.IDLE,
    "AR-6": State.AWAITING_RELEASE_RP,
    "AR-7": State.AWAITING_LOCAL_RELEASE_RESPONSE,
    "AR-8": None,  # release collision: Sta9 for the requestor, Sta10 for the acceptor
    "AR-9": State.COLLISION_REQUESTOR_AWAITING_RP,
    "AR-10": State.COLLISION_ACCEPTOR_AWAITING_LOCAL,
    "AA-1": State.AWAITING_CLOSE,
    "AA-2": State.IDLE,
    "AA-3": State.IDLE,
    "AA-4": State.IDLE,
    "AA-5": State.IDLE,
    "AA-6": State.AWAITING_CLOSE,
    "AA-7": State.AWAITING_CLOSE,
    "AA-8": State.AWAITING_CLOSE,
}

# the PDU types (PS3.8 table 9-11) and the event their arrival is
PDU_EVENTS = {
    0x01: Event.RQ_RECEIVED,
    0x02: Event.AC_RECEIVED,
    0x03: Event.RJ_RECEIVED,
    0x04: Event.P_DATA_RECEIVED,
    0x05: Event.RELEASE_RQ_RECEIVED,
    0x06: Event.RELEASE_RP_RECEIVED,
    0x07: Event.ABORT_RECEIVED,
}
