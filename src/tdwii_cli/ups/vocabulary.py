"""The UPS names of PS3.4 Annex CC that client and server share: the four states, the
N-ACTION types and the N-EVENT-REPORT types. No pydicom, so the client's one-shot
commands can use them (the rules are in `tdwii_cli.ups.states`)."""

from __future__ import annotations

# Procedure Step State (CC.1.1)
SCHEDULED = "SCHEDULED"
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
CANCELED = "CANCELED"
STATES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED)
FINAL = (COMPLETED, CANCELED)

# N-ACTION Action Type ID (CC.2.1 to CC.2.3)
CHANGE_STATE, REQUEST_CANCEL, SUBSCRIBE, UNSUBSCRIBE, SUSPEND_GLOBAL = 1, 2, 3, 4, 5

# N-EVENT-REPORT Event Type ID (CC.2.4)
STATE_REPORT, CANCEL_REQUESTED, PROGRESS_REPORT, SCP_STATUS_CHANGE, ASSIGNED = 1, 2, 3, 4, 5
EVENT_NAMES = {
    STATE_REPORT: "State Report",
    CANCEL_REQUESTED: "Cancel Requested",
    PROGRESS_REPORT: "Progress Report",
    SCP_STATUS_CHANGE: "SCP Status Change",
    ASSIGNED: "Assigned",
}
