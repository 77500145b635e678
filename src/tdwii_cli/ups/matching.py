"""C-FIND matching for UPS (PS3.4 C.1.2, Annex CC): identifier -> SQL + a Python post-filter.

`Query.from_identifier(identifier)` splits the request in two:

- `where` / `params`: a SQL condition on the store's indexed columns (SOP Instance
  UID, Procedure Step State, Scheduled Procedure Step Start DateTime, Patient ID,
  Patient Name, Worklist Label, Input Readiness State, Priority, and the first
  item of the Scheduled Station Name / Scheduled Workitem Code Sequences), so a
  typical delivery-device query reads only its own rows;
- `residual`: the keys SQL cannot decide, checked in Python on the decoded
  dataset (`Query.post_filter`).

Matching rules (PS3.4 C.1.2.1):

- empty value: universal matching (the key is only returned);
- UI: single value or a list of UIDs (``uid1\\uid2``), never wildcards;
- DA / TM / DT: single value or a range ``A-B``, ``-B``, ``A-``; a value with less
  precision than the stored one covers its whole period (``20240501`` = that day);
- other string VRs: single value (exact, case-sensitive) or wildcards ``*`` ``?``;
- SQ: sequence matching with one item: a record matches when one of its items
  matches every non-empty key of the query item; an empty item (or no item)
  is universal;
- the Transaction UID (0008,1195) is never a matching key and never returned.

`response_identifier(identifier, ds)` builds one pending response: every
requested key with the record's value, or empty when the record has none.
`matches(identifier, ds)` is the whole test in Python (filtered subscriptions).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from tdwii_cli.dicom import rawdataset, tags
from tdwii_cli.dicom.codec import decode
from tdwii_cli.dicom.values import normalise_dt, upper_dt

__all__ = [
    "Query",
    "QueryError",
    "dt_bounds",
    "matches",
    "response_identifier",
]

TRANSACTION_UID = tags.TRANSACTION_UID
SPECIFIC_CHARACTER_SET = tags.SPECIFIC_CHARACTER_SET

# tag -> (column, kind) of the store's indexed columns
INDEXED: dict[int, tuple[str, str]] = {
    tags.SOP_INSTANCE_UID: ("uid", "uid"),
    tags.PROCEDURE_STEP_STATE: ("state", "text"),
    tags.SCHEDULED_PROCEDURE_STEP_START_DATETIME: ("scheduled_start", "dt"),
    tags.PATIENT_ID: ("patient_id", "text"),
    tags.PATIENT_NAME: ("patient_name", "text"),
    tags.WORKLIST_LABEL: ("worklist_label", "text"),
    tags.INPUT_READINESS_STATE: ("input_readiness", "text"),
    tags.SCHEDULED_PROCEDURE_STEP_PRIORITY: ("priority", "text"),
    tags.SCHEDULED_STATION_NAME_CODE_SEQUENCE: ("station_code", "code"),
    tags.SCHEDULED_WORKITEM_CODE_SEQUENCE: ("workitem_code", "code"),
}

STRING_VRS = {"AE", "AS", "CS", "DS", "IS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_DATE = re.compile(r"^\d{8}$")
_DT_RANGE = re.compile(
    r"(?P<low>\d[\d.]*(?:[+-]\d{4})?)?(?:(?P<dash>-)(?P<high>\d[\d.]*(?:[+-]\d{4})?)?)?"
)
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")


class QueryError(ValueError):
    """The identifier cannot be matched (C-FIND answers A900 with this message)."""


# -- values -----------------------------------------------------------------------------


def _values(value: Any) -> list[str]:
    """The stored element value as a list of stripped strings (one per value)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v).strip() for v in value if v is not None and str(v).strip() != ""]
    text = str(value).strip()
    return [text] if text else []


def _query_text(elem: DataElement) -> str:
    """The query value as one string ('' for universal matching)."""
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _norm_tm(text: str, upper: bool = False) -> str:
    m = _TIME.match(text.replace(":", ""))
    if not m:
        return ""
    hour, minute, second, fraction = m.groups()
    fill = "59" if upper else "00"
    return (
        f"{hour}{minute or fill}{second or fill}.{(fraction or '').ljust(6, '9' if upper else '0')}"
    )


def _norm(vr: str, text: str, upper: bool = False) -> str:
    text = text.strip()
    if vr == "DA":
        text = text.replace(".", "")
        return text if _DATE.match(text) else ""
    if vr == "TM":
        return _norm_tm(text, upper)
    # DT
    text = text.replace(" ", "")
    return upper_dt(text) if upper else normalise_dt(text)


def dt_bounds(vr: str, text: str) -> tuple[str, str]:
    """Normalised inclusive (low, high) of a DA/TM/DT query value; '' for an open end."""
    text = text.strip()
    if vr == "DT":
        m = _DT_RANGE.fullmatch(text.replace(" ", ""))
        if not m:
            raise QueryError(f"invalid DT matching value {text!r}")
        low_text = m.group("low") or ""
        high_text = (m.group("high") or "") if m.group("dash") else low_text
    elif "-" in text:
        low_text, _, high_text = text.partition("-")
    else:
        low_text, high_text = text, text
    low = _norm(vr, low_text) if low_text.strip() else ""
    high = _norm(vr, high_text, upper=True) if high_text.strip() else ""
    if (low_text.strip() and not low) or (high_text.strip() and not high):
        raise QueryError(f"invalid {vr} matching value {text!r}")
    if not low and not high:
        raise QueryError(f"invalid {vr} range {text!r}")
    return low, high


def _glob_escape(text: str) -> str:
    """`text` with GLOB's own '[' made literal (DICOM's * and ? are GLOB's)."""
    return text.replace("[", "[[]")


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("^" + "".join(parts) + "$", re.DOTALL)


# -- element matchers (Python) -------------------------------------------------------------

Matcher = Callable[[Dataset], bool]


def _element_matcher(elem: DataElement) -> Matcher | None:
    """A predicate on a record for query element `elem` (None: universal matching)."""
    tag = elem.tag
    vr = elem.VR
    if vr == "SQ":
        return _sequence_matcher(elem)
    text = _query_text(elem)
    if text == "":
        return None
    if vr == "UI":
        wanted = {u.strip() for u in text.split("\\") if u.strip()}

        def match_uid(ds: Dataset) -> bool:
            return any(v in wanted for v in _values(ds.get(tag).value if tag in ds else None))

        return match_uid
    if vr in ("DA", "TM", "DT"):
        low, high = dt_bounds(vr, text)

        def match_range(ds: Dataset) -> bool:
            if tag not in ds:
                return False
            for v in _values(ds[tag].value):
                n = _norm(vr, v)
                if n and (not low or n >= low) and (not high or n <= high):
                    return True
            return False

        return match_range
    if "*" in text or "?" in text:
        regex = _wildcard_regex(text)
        if text.strip("*") == "":
            return None  # '*' alone matches everything, like universal matching

        def match_wild(ds: Dataset) -> bool:
            return any(regex.match(v) for v in _values(ds.get(tag).value if tag in ds else None))

        return match_wild

    def match_single(ds: Dataset) -> bool:
        return text in _values(ds.get(tag).value if tag in ds else None)

    return match_single


def _item_matchers(item: Dataset) -> list[Matcher]:
    found = []
    for elem in item:
        if (
            elem.tag == TRANSACTION_UID
            or elem.tag.element == 0
            or elem.tag == SPECIFIC_CHARACTER_SET
        ):
            continue
        matcher = _element_matcher(elem)
        if matcher is not None:
            found.append(matcher)
    return found


def _sequence_matcher(elem: DataElement) -> Matcher | None:
    items = list(elem.value or [])
    if not items:
        return None
    if len(items) > 1:
        raise QueryError(f"sequence {elem.keyword or elem.tag} has more than one item")
    inner = _item_matchers(items[0])
    if not inner:
        return None
    tag = elem.tag

    def match_sequence(ds: Dataset) -> bool:
        if tag not in ds:
            return False
        return any(all(m(item) for m in inner) for item in (ds[tag].value or []))

    return match_sequence


# -- the query ----------------------------------------------------------------------------


@dataclass
class Query:
    """One C-FIND identifier, compiled: SQL on the indexed columns + residual Python checks."""

    identifier: Dataset
    where: str = "1"
    params: list[Any] = field(default_factory=list)
    residual: list[Matcher] = field(default_factory=list)
    in_sql: list[str] = field(default_factory=list)
    residual_tags: list[int] = field(default_factory=list)  # the tags `residual` reads
    _selection: rawdataset.Selection | None = field(default=None, repr=False)
    _selection_made: bool = field(default=False, repr=False)

    @classmethod
    def from_identifier(cls, identifier: Dataset) -> Query:
        """Compile `identifier`; raises `QueryError` for values that cannot be matched."""
        clauses: list[str] = []
        params: list[Any] = []
        residual: list[Matcher] = []
        residual_tags: list[int] = []
        in_sql: list[str] = []
        state_clause: str | None = None
        selective = False
        try:
            elements = list(identifier)
        except Exception as exc:  # undecodable identifier
            raise QueryError(f"identifier cannot be decoded: {exc}") from None
        for elem in elements:
            tag = elem.tag
            if tag in (TRANSACTION_UID, SPECIFIC_CHARACTER_SET) or tag.element == 0:
                continue
            if tag.is_private:
                continue
            sql = _sql_condition(elem) if tag in INDEXED else None
            if sql is not None:
                clause, values, exact = sql
                if INDEXED[tag][0] == "state":
                    state_clause = clause
                elif INDEXED[tag][0] == "station_code" and clause.endswith("= ?"):
                    pass  # the (station_code, state, scheduled_start) index serves all three
                elif INDEXED[tag][0] in ("uid", "patient_id", "station_code", "workitem_code"):
                    selective = True
                clauses.append(clause)
                params.extend(values)
                in_sql.append(elem.keyword or str(tag))
                if exact:
                    continue
            matcher = _element_matcher(elem)
            if matcher is not None:
                residual.append(matcher)
                residual_tags.append(int(tag))
        if selective and state_clause is not None:
            # Procedure Step State is rarely selective: let SQLite seek on the station /
            # patient / UID index instead (a unary + keeps it off the state index).
            i = clauses.index(state_clause)
            clauses[i] = state_clause.replace("state", "+state", 1)
        where = " AND ".join(clauses) if clauses else "1"
        return cls(identifier, where, params, residual, in_sql, residual_tags)

    def post_filter(self, ds: Dataset) -> bool:
        """The residual (non-SQL) keys on a record that passed `where`."""
        return all(m(ds) for m in self.residual)

    def post_filter_blob(self, blob: bytes) -> bool:
        """`post_filter` on a record's stored bytes, decoding only the elements it reads."""
        if not self.residual:
            return True
        try:
            part = rawdataset.subset(blob, self.residual_tags)
        except rawdataset.RawError:
            return self.post_filter(decode(blob))
        return self.post_filter(decode(part))

    def response(self, ds: Dataset) -> Dataset:
        """The pending response's identifier for record `ds` (see `response_identifier`)."""
        return response_identifier(self.identifier, ds)

    def response_bytes(self, blob: bytes) -> bytes | None:
        """The same identifier, Explicit VR Little Endian, cut from the stored bytes `blob`
        of the record without decoding it; None when the keys do not allow it."""
        if not self._selection_made:
            self._selection = _selection(self.identifier)
            self._selection_made = True
        if self._selection is None:
            return None
        try:
            return self._selection.pick(blob)
        except rawdataset.RawError:
            return None


def _sql_condition(elem: DataElement) -> tuple[str, list[Any], bool] | None:
    """(clause, params, exact) for an indexed key; None when SQL cannot help.

    `exact` means SQL decides the key alone (no Python re-check needed).
    """
    column, kind = INDEXED[elem.tag]
    if kind == "code":
        return _code_condition(elem, column)
    if elem.VR == "SQ":
        return None
    text = _query_text(elem)
    if text == "":
        return None
    if kind == "uid":
        uids = [u.strip() for u in text.split("\\") if u.strip()]
        if len(uids) == 1:
            return f"{column} = ?", uids, True
        return f"{column} IN ({', '.join('?' * len(uids))})", uids, True
    if kind == "dt":
        low, high = dt_bounds("DT", text)
        clauses, values = [], []
        if low:
            clauses.append(f"{column} >= ?")
            values.append(low)
        if high:
            clauses.append(f"{column} <= ?")
            values.append(high)
        # '' (no or invalid start) sorts first: exclude it for an open lower bound
        if not low:
            clauses.append(f"{column} <> ''")
        return " AND ".join(clauses), values, True
    if "*" in text or "?" in text:
        if text.strip("*") == "":
            return None
        return f"{column} GLOB ?", [_glob_escape(text)], True
    return f"{column} = ?", [text], True


def _code_condition(elem: DataElement, column: str) -> tuple[str, list[Any], bool] | None:
    """A pre-filter on the first item's 'CodeValue^CodingSchemeDesignator' (never exact:
    the full sequence match runs in Python on the rows it lets through)."""
    if elem.VR != "SQ" or not elem.value:
        return None
    item = elem.value[0]
    value = _query_text(item["CodeValue"]) if "CodeValue" in item else ""
    scheme = _query_text(item["CodingSchemeDesignator"]) if "CodingSchemeDesignator" in item else ""
    if not value and not scheme:
        return None
    if "^" in value or "^" in scheme:
        return None
    wild = any(c in value + scheme for c in "*?")
    if value and not wild and not scheme:  # any scheme: an index range on the prefix
        return f"{column} >= ? AND {column} < ?", [f"{value}^", f"{value}_"], False
    value_glob = _glob_escape(value) if value else "*"
    scheme_glob = _glob_escape(scheme) if scheme else "*"
    if "*" not in value_glob + scheme_glob and "?" not in value_glob + scheme_glob:
        return f"{column} = ?", [f"{value}^{scheme}"], False
    return f"{column} GLOB ?", [f"{value_glob}^{scheme_glob}"], False


def matches(identifier: Dataset, ds: Dataset) -> bool:
    """Whether record `ds` matches `identifier`, all in Python (e.g. filtered subscriptions)."""
    return all(m(ds) for m in _item_matchers(identifier))


# -- responses ----------------------------------------------------------------------------


def _empty(elem: DataElement) -> DataElement:
    return DataElement(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else None)


def _filtered_item(query_item: Dataset, record_item: Dataset) -> Dataset:
    out = Dataset()
    for qelem in query_item:
        if qelem.tag == TRANSACTION_UID or qelem.tag.element == 0:
            continue
        out.add(_answer(qelem, record_item))
    return out


def _answer(qelem: DataElement, ds: Dataset) -> DataElement:
    tag = qelem.tag
    if tag not in ds:
        return _empty(qelem)
    elem = ds[tag]
    if qelem.VR == "SQ" and elem.VR == "SQ":
        query_items = list(qelem.value or [])
        if query_items and len(query_items[0]):
            items = [_filtered_item(query_items[0], it) for it in (elem.value or [])]
            return DataElement(tag, "SQ", Sequence(items))
    return elem


def _selection(identifier: Dataset, top: bool = True) -> rawdataset.Selection | None:
    """The keys of `identifier` as a `rawdataset.Selection` answering as
    `response_identifier` does; None when a key's VR is not a plain one."""
    keys: list[rawdataset.Key] = []
    for qelem in identifier:
        tag = qelem.tag
        if tag == TRANSACTION_UID or tag.element == 0 or (top and tag == SPECIFIC_CHARACTER_SET):
            continue
        vr = str(qelem.VR).encode("ascii", "replace")
        if vr not in rawdataset.KNOWN_VRS:
            return None
        sub = None
        if qelem.VR == "SQ":
            query_items = list(qelem.value or [])
            if query_items and len(query_items[0]):
                sub = _selection(query_items[0], top=False)
                if sub is None:
                    return None
        keys.append(rawdataset.Key(int(tag), vr, sub))
    always = (SPECIFIC_CHARACTER_SET, tags.SOP_INSTANCE_UID) if top else ()
    return rawdataset.Selection(keys, always)


def response_identifier(
    identifier: Dataset, ds: Dataset, always: Iterable[int] = (tags.SOP_INSTANCE_UID,)
) -> Dataset:
    """The requested keys of `identifier` with `ds`'s values (empty when `ds` has none).

    The record's Specific Character Set comes along when it has one; the keys
    in `always` (the SOP Instance UID) are returned even when not asked for;
    the Transaction UID never is.
    """
    out = Dataset()
    if SPECIFIC_CHARACTER_SET in ds:
        out.add(ds[SPECIFIC_CHARACTER_SET])
    for qelem in identifier:
        tag = qelem.tag
        if tag in (TRANSACTION_UID, SPECIFIC_CHARACTER_SET) or tag.element == 0:
            continue
        out.add(_answer(qelem, ds))
    for always_tag in always:
        if always_tag not in out and always_tag in ds:
            out.add(ds[always_tag])
    return out
