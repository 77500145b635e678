"""The four UPS states (PS3.4 CC.1.1), by name; no pydicom, so the client's one-shot
commands can use them (the rules are in `tdwii_cli.ups.states`)."""

from __future__ import annotations

SCHEDULED = "SCHEDULED"
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
CANCELED = "CANCELED"
STATES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED)
FINAL = (COMPLETED, CANCELED)
