"""What a client does with a DIMSE status: success goes on, a warning (B3xx, 0001, 0107,
0116) is logged and goes on (exit 0), a failure is a `DimseFailure` (exit 64), each
shown in hex and in the standard's words. A status the operation does not return (a
Pending to an N-SET) is a failure, named as such; the peer's Error Comment is shown on
one line, escaped (`tdwii_cli.text.one_line`)."""

from __future__ import annotations

import logging

from tdwii_cli import exitcodes
from tdwii_cli.dicom import status as st
from tdwii_cli.errors import TdwiiError
from tdwii_cli.text import one_line

log = logging.getLogger("tdwii.ups")

# what a person can do about the UPS failures a client meets
_HINTS = {
    st.UPS_NO_SUCH_UPS: "check the UID: tdwii ups find lists the workitems",
    st.UPS_ALREADY_IN_PROGRESS: "another performer has claimed it",
    st.UPS_WRONG_TRANSACTION_UID: "this is not the Transaction UID of the claim: "
    "see --transactions or pass --transaction-uid",
    st.UPS_MAY_NO_LONGER_BE_UPDATED: "the workitem is COMPLETED or CANCELED",
    st.UPS_NOT_IN_PROGRESS: "claim it first (tdwii ups claim)",
    st.UPS_NOT_SCHEDULED: "only a SCHEDULED workitem can be claimed",
    st.UPS_UNKNOWN_RECEIVING_AE: "the server must know our AE title (its AE configuration)",
    st.UPS_PERFORMER_UNREACHABLE: "the server cannot reach the performer to ask it",
    st.UPS_FINAL_STATE_NOT_MET: "the final update is missing: tdwii ups complete sends it",
    st.NOT_AUTHORIZED: "the server's AE configuration does not give our AE title (-aet) that "
    "role, or the workitem is another's",
    st.FIND_NOT_AUTHORIZED: "the server's AE configuration does not give our AE title (-aet) "
    "the query role",
}


class DimseFailure(TdwiiError):
    """The peer answered `what` (an `operation`, e.g. "N-SET") with a failure (exit 64)."""

    def __init__(self, what: str, status: int, comment: str = "", operation: str = "") -> None:
        words = f"{what}: {describe(status, comment, operation)}"
        super().__init__(words, exitcodes.DIMSE_FAILURE, _HINTS.get(status, ""))
        self.status = status
        self.comment = comment


def describe(status: int, comment: str = "", operation: str = "") -> str:
    """`0xB304 (Warning: ...)` and the Error Comment (escaped), when it adds to the
    standard's words; a status `operation` does not return is named as such."""
    text = st.format_status(status, operation)
    if comment and comment.strip().lower() not in text.lower():
        return f"{text}: {one_line(comment)}"
    return text


def judge(what: str, status: int, comment: str = "", *, operation: str) -> int:
    """`status` when it is success or a warning (logged) that `operation` returns;
    `DimseFailure` otherwise."""
    if st.belongs(status, operation):
        if status == st.SUCCESS:
            return status
        if st.is_warning(status):
            log.warning("%s: %s", what, describe(status, comment, operation))
            return status
    raise DimseFailure(what, status, comment, operation)
