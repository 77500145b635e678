"""The UIDs tdwii negotiates and writes: SOP Classes, transfer syntaxes, well-known instances,
and our own Implementation Class UID and version name (PS3.5, PS3.7 Annex D)."""

from __future__ import annotations

from tdwii_cli import __version__

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # the DICOM Application Context Name

VERIFICATION = "1.2.840.10008.1.1"
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"
UPS_SOP_CLASSES = (UPS_PUSH, UPS_WATCH, UPS_PULL, UPS_EVENT, UPS_QUERY)
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"

# Well-known UPS instances (PS3.4 CC.3.1)
UPS_GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5"
UPS_FILTERED_GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5.1"
UPS_WELL_KNOWN = (UPS_GLOBAL_SUBSCRIPTION, UPS_FILTERED_GLOBAL_SUBSCRIPTION)

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
# What tdwii proposes and accepts: Explicit VR Little Endian first (Part 10 files are
# usually encoded so, and the store keeps it), then the default transfer syntax.
TRANSFER_SYNTAXES = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)

# tdwii's Implementation Class UID (a UUID-derived 2.25 UID, PS3.5 B.2) and version name (SH)
IMPLEMENTATION_CLASS_UID = "2.25.139514309086075461509278531098557105521"
IMPLEMENTATION_VERSION = f"TDWII_{__version__}"[:16]

_NAMES = {
    VERIFICATION: "Verification",
    UPS_PUSH: "UPS Push",
    UPS_WATCH: "UPS Watch",
    UPS_PULL: "UPS Pull",
    UPS_EVENT: "UPS Event",
    UPS_QUERY: "UPS Query",
    IMPLICIT_VR_LE: "Implicit VR LE",
    EXPLICIT_VR_LE: "Explicit VR LE",
    EXPLICIT_VR_BE: "Explicit VR BE",
    DEFLATED_EXPLICIT_VR_LE: "Deflated Explicit VR LE",
    UPS_GLOBAL_SUBSCRIPTION: "UPS Global Subscription",
    UPS_FILTERED_GLOBAL_SUBSCRIPTION: "UPS Filtered Global Subscription",
}


def uid_name(uid: object) -> str:
    """A short name for the UIDs tdwii negotiates (the UID itself otherwise)."""
    text = str(uid)
    return _NAMES.get(text, text)


def full_uid_name(uid: object) -> str:
    """`uid_name`, else the standard's name from pydicom's UID dictionary, with the UID
    (for the rare lines about other SOP Classes: pydicom is imported on first use)."""
    text = str(uid)
    if text in _NAMES:
        return _NAMES[text]
    from pydicom._uid_dict import UID_dictionary

    entry = UID_dictionary.get(text)
    return f"{entry[0]} ({text})" if entry else text
