"""The roles an AE title may hold, and the one table that says which role each UPS operation
needs: DIMSE and (later) UPS-RS ask `decide()` and nothing else.

Roles: `create` (N-CREATE, N-SET of a SCHEDULED workitem), `perform` (claim, then
progress, final update, complete or cancel what it holds), `cancel` (Request Cancel),
`watch` (subscribe, unsubscribe and suspend for an AE title its certificate is bound
to), `query` (C-FIND, N-GET), `admin` (all of them, and the subscription operations
for any AE title). Holding a workitem is never a role: only the AE title that claimed
it may update or finish it, admin included.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

ROLES = ("create", "perform", "cancel", "watch", "query", "admin")
ADMIN = "admin"


class RoleError(ValueError):
    """A role name that is not one of `ROLES`."""


def parse_roles(values: Iterable[str]) -> frozenset[str]:
    """Role names (case-insensitive, comma-separated lists allowed) as a set; RoleError
    naming the first unknown one."""
    out: set[str] = set()
    for value in values:
        for part in str(value).split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in ROLES:
                raise RoleError(f"unknown role {part.strip()!r} (roles: {', '.join(ROLES)})")
            out.add(name)
    return frozenset(out)


class Operation(enum.Enum):
    """What a peer asks the worklist manager to do, as far as rights go."""

    VERIFY = "C-ECHO"
    CREATE = "N-CREATE"
    UPDATE_SCHEDULED = "N-SET of a SCHEDULED workitem"
    UPDATE_HELD = "N-SET of an IN PROGRESS workitem"
    CLAIM = "Change State to IN PROGRESS (claim)"
    FINISH = "Change State to COMPLETED or CANCELED"
    REQUEST_CANCEL = "Request Cancel"
    SUBSCRIBE = "Subscribe"
    UNSUBSCRIBE = "Unsubscribe"
    SUSPEND = "Suspend Global Subscription"
    QUERY = "C-FIND"
    READ = "N-GET"

    @property
    def changes(self) -> bool:
        """Whether it changes a workitem or a subscription (rights are checked afresh)."""
        return self not in (Operation.VERIFY, Operation.QUERY, Operation.READ)


_SUBSCRIPTION = (Operation.SUBSCRIBE, Operation.UNSUBSCRIBE, Operation.SUSPEND)
_HELD = (Operation.UPDATE_HELD, Operation.FINISH)
NEEDS: dict[Operation, str | None] = {
    Operation.VERIFY: None,
    Operation.CREATE: "create",
    Operation.UPDATE_SCHEDULED: "create",
    Operation.UPDATE_HELD: "perform",
    Operation.CLAIM: "perform",
    Operation.FINISH: "perform",
    Operation.REQUEST_CANCEL: "cancel",
    Operation.SUBSCRIBE: "watch",  # for an AE title of its own; another needs admin
    Operation.UNSUBSCRIBE: "watch",
    Operation.SUSPEND: "watch",
    Operation.QUERY: "query",
    Operation.READ: "query",
}


@dataclass(frozen=True)
class Principal:
    """Who asks: the calling AE title, its roles, and every AE title its certificate is
    bound to (`titles`, for "its own" subscriptions)."""

    ae_title: str
    roles: frozenset[str] = frozenset()
    titles: frozenset[str] = field(default_factory=frozenset)

    def has(self, role: str) -> bool:
        return role in self.roles or ADMIN in self.roles

    def roles_words(self) -> str:
        return ", ".join(r for r in ROLES if r in self.roles) or "no roles"


@dataclass(frozen=True)
class Verdict:
    """`allowed`, or why not: `reason` (one phrase naming the role or the holder) and
    `short` (a few words, for a DICOM Error Comment of at most 64 characters)."""

    allowed: bool
    reason: str = ""
    short: str = ""


ALLOWED = Verdict(True)


def decide(
    principal: Principal,
    operation: Operation,
    *,
    holder: str | None = None,
    receiving: str | None = None,
) -> Verdict:
    """May `principal` do `operation`? `holder`: the AE title that claimed the workitem
    (updates and finishing); `receiving`: the Receiving AE of a subscription operation."""
    needed = NEEDS[operation]
    who = principal.ae_title
    if operation in _SUBSCRIPTION and receiving is not None and receiving not in principal.titles:
        if not principal.has(ADMIN):
            return Verdict(
                False,
                f"{operation.value} for {receiving}, an AE title the certificate is not bound "
                f"to, needs role admin ({who} has {principal.roles_words()})",
                f"needs role admin for {receiving}",
            )
        return ALLOWED
    if needed is not None and not principal.has(needed):
        return Verdict(
            False,
            f"{operation.value} needs role {needed} ({who} has {principal.roles_words()})",
            f"needs role {needed}",
        )
    if operation in _HELD and holder is not None and holder != who:
        return Verdict(
            False,
            f"{operation.value}: the workitem is held by {holder}, not {who}",
            f"held by {holder}",
        )
    return ALLOWED


# For the README and `serve --help`: each operation, its DIMSE message, the role it needs.
TABLE: tuple[tuple[str, str, str], ...] = (
    ("verify", "C-ECHO", "any AE title bound to the certificate"),
    ("create a workitem", "N-CREATE", "create"),
    ("update a SCHEDULED workitem", "N-SET", "create"),
    ("claim (RO-60)", "N-ACTION 1 IN PROGRESS", "perform"),
    ("progress, final update (RO-62, RO-64)", "N-SET", "perform, and holding it"),
    ("complete or cancel (RO-65)", "N-ACTION 1 COMPLETED/CANCELED", "perform, and holding it"),
    ("request cancellation", "N-ACTION 2", "cancel"),
    ("subscribe, unsubscribe, suspend for itself", "N-ACTION 3, 4, 5", "watch"),
    ("the same for another AE title", "N-ACTION 3, 4, 5", "admin"),
    ("query the worklist (RO-58)", "C-FIND", "query"),
    ("read a workitem", "N-GET", "query"),
)
