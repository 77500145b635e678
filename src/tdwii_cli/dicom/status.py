"""DIMSE status codes (PS3.7 Annex C, PS3.4 CC.2) and their words.

The codes are named here once; `status_text` takes the standard's words from
pynetdicom's tables, imported only when a code other than Success is shown.
"""

from __future__ import annotations

SUCCESS = 0x0000

# General statuses (PS3.7 C.4)
INVALID_ATTRIBUTE_VALUE = 0x0106
ATTRIBUTE_LIST_ERROR = 0x0107  # a warning: the instance was created all the same
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116  # a warning, like 0107
NO_SUCH_SOP_CLASS = 0x0118
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
NO_SUCH_ACTION = 0x0123
NOT_AUTHORIZED = 0x0124  # PS3.7: N-GET, N-SET, N-ACTION, N-CREATE (not C-FIND, C-ECHO)
UNRECOGNIZED_OPERATION = 0x0211
RESOURCE_LIMITATION = 0x0213

# C-FIND (PS3.4 C.4.1.1.4)
PENDING = 0xFF00
PENDING_WITH_WARNINGS = 0xFF01
CANCEL = 0xFE00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES = 0xA700
UNABLE_TO_PROCESS = 0xC000
# PS3.7 lists no "not authorized" for C-FIND: tdwii's own "Failed: Unable to process" value
FIND_NOT_AUTHORIZED = 0xC124

# Unified Procedure Step (PS3.4 CC.2)
UPS_CREATED_WITH_MODIFICATIONS = 0xB300
UPS_DELETION_LOCK_NOT_GRANTED = 0xB301
UPS_ALREADY_CANCELED = 0xB304
UPS_ALREADY_COMPLETED = 0xB306
UPS_MAY_NO_LONGER_BE_UPDATED = 0xC300
UPS_WRONG_TRANSACTION_UID = 0xC301
UPS_ALREADY_IN_PROGRESS = 0xC302
UPS_ONLY_BY_NCREATE = 0xC303
UPS_FINAL_STATE_NOT_MET = 0xC304
UPS_NO_SUCH_UPS = 0xC307
UPS_UNKNOWN_RECEIVING_AE = 0xC308
UPS_NOT_SCHEDULED = 0xC309
UPS_NOT_IN_PROGRESS = 0xC310
UPS_CANCEL_ALREADY_COMPLETED = 0xC311
UPS_PERFORMER_UNREACHABLE = 0xC312
UPS_PERFORMER_REFUSES_CANCEL = 0xC313
UPS_NOT_APPROPRIATE = 0xC314
UPS_EVENTS_NOT_SUPPORTED = 0xC315

# Warnings that still did what was asked (PS3.7 C.4.2: 0001, 0107, 0116; and any Bxxx)
_GENERAL_WARNINGS = (0x0001, ATTRIBUTE_LIST_ERROR, ATTRIBUTE_VALUE_OUT_OF_RANGE)


def is_pending(code: int) -> bool:
    """FF00 / FF01: more responses follow."""
    return code in (PENDING, PENDING_WITH_WARNINGS)


def is_warning(code: int) -> bool:
    """A warning status: Bxxx or one of the general warnings 0001, 0107, 0116."""
    return (code >> 12) == 0xB or code in _GENERAL_WARNINGS


# the words of the statuses a one-shot command meets without anything going wrong
_COMMON = {
    SUCCESS: "Success",
    CANCEL: "Cancel: Matching terminated due to Cancel request",
    PENDING: "Pending: Matches are continuing, current match supplied",
}


def status_text(code: int) -> str:
    """The standard's words for a DIMSE status, from pynetdicom's tables."""
    if code in _COMMON:
        return _COMMON[code]
    from pynetdicom import status as st

    for table in (
        st.UNIFIED_PROCEDURE_STEP_SERVICE_CLASS_STATUS,
        st.GENERAL_STATUS,
        st.VERIFICATION_SERVICE_CLASS_STATUS,
    ):
        if code in table:
            category, words = table[code]
            return f"{category}: {words}" if words else category
    category = st.code_to_category(code)
    return category if category != st.STATUS_UNKNOWN else "Unknown status"


# statuses that only some operations return (PS3.7 C.4, PS3.4 C.4.1.1.4, C.4.2, C.4.3):
# Pending and Cancel belong to the C- operations that answer more than once
_ONLY_FOR = {
    PENDING: ("C-FIND", "C-GET", "C-MOVE"),
    PENDING_WITH_WARNINGS: ("C-FIND",),
    CANCEL: ("C-FIND", "C-GET", "C-MOVE"),
}


def belongs(code: int, operation: str) -> bool:
    """False when `code` is a status that `operation` (e.g. "N-SET") never returns: a
    Pending or Cancel outside C-FIND, C-GET and C-MOVE."""
    return operation in _ONLY_FOR.get(code, (operation,))


def status_words(code: int, operation: str = "") -> str:
    """The standard's words for `code`; for a status that `operation` does not return, its
    category and that: `Pending, which N-SET does not return`."""
    if operation and not belongs(code, operation):
        return f"{status_text(code).split(':', 1)[0]}, which {operation} does not return"
    return status_text(code)


def format_status(code: int, operation: str = "") -> str:
    """E.g. `0xC309 (Failure: The provided value of UPS State was not SCHEDULED)`, or
    `0xFF00 (Pending, which N-SET does not return)` (see `status_words`)."""
    return f"0x{code:04X} ({status_words(code, operation)})"
