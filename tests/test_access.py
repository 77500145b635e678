"""Who may do what, as rules: certificate identities, the role table, the AE configuration file
(old and new format, errors, updates). The same rules over the wire: tests/test_authorization.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tdwii_cli.access import aefile
from tdwii_cli.access.identity import IdentityError, canonical, certificate_as_peer, keys_of
from tdwii_cli.access.policy import AccessPolicy
from tdwii_cli.access.roles import ROLES, Operation, Principal, RoleError, decide, parse_roles
from tdwii_cli.errors import TdwiiError
from tdwii_cli.tls.peer import PeerIdentity

FINGERPRINT = "ab" * 32


def peer(cn: str = "tdd1", **kw: object) -> PeerIdentity:
    fields: dict[str, object] = {
        "address": "127.0.0.1:5000",
        "subject_cn": cn,
        "sans": (("DNS", "TDD1.example.org."), ("IP", "::1"), ("URI", "urn:tdd:1")),
        "fingerprint": FINGERPRINT,
    }
    fields.update(kw)
    return PeerIdentity(**fields)  # type: ignore[arg-type]


# -- identities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("CN=tdd1", "CN=tdd1"),
        ("cn=tdd1", "CN=tdd1"),
        ("DNS:TDD1.Example.org.", "DNS:tdd1.example.org"),
        ("IP:0:0:0:0:0:0:0:1", "IP:::1"),
        ("IP:[::1]", "IP:::1"),
        ("URI:urn:tdd:1", "URI:urn:tdd:1"),
        ("SHA256:" + ":".join(["AB"] * 32), "SHA256:" + FINGERPRINT),
    ],
)
def test_identities_are_compared_in_one_canonical_form(text: str, key: str) -> None:
    assert canonical(text) == key
    assert key in keys_of(peer())


@pytest.mark.parametrize(
    "text", ["tdd1", "CN=", "IP:not-an-address", "SHA256:abcd", "email:a@b", "O=tdwii"]
)
def test_a_bad_identity_says_why(text: str) -> None:
    with pytest.raises(IdentityError):
        canonical(text)


def test_a_peer_without_a_certificate_answers_to_nothing() -> None:
    assert keys_of(PeerIdentity(address="127.0.0.1:1")) == frozenset()
    # a CN is not an identity of its own when the certificate is somebody else's
    assert "CN=tdd2" not in keys_of(peer())


def test_a_certificate_described_by_certinfo_is_the_peer_it_would_be() -> None:
    as_peer = certificate_as_peer("tdd1", ("DNS:tdd1.example.org", "IP:::1"), ":".join(["AB"] * 32))
    assert {"CN=tdd1", "DNS:tdd1.example.org", "IP:::1", "SHA256:" + FINGERPRINT} <= keys_of(
        as_peer
    )


# -- roles --------------------------------------------------------------------------------

ALL_OPERATIONS = list(Operation)


def test_each_role_allows_its_operations_and_nothing_else() -> None:
    allowed = {
        "create": {Operation.VERIFY, Operation.CREATE, Operation.UPDATE_SCHEDULED},
        "perform": {Operation.VERIFY, Operation.CLAIM, Operation.UPDATE_HELD, Operation.FINISH},
        "cancel": {Operation.VERIFY, Operation.REQUEST_CANCEL},
        "watch": {
            Operation.VERIFY,
            Operation.SUBSCRIBE,
            Operation.UNSUBSCRIBE,
            Operation.SUSPEND,
        },
        "query": {Operation.VERIFY, Operation.QUERY, Operation.READ},
        "admin": set(ALL_OPERATIONS),
    }
    for role in ROLES:
        who = Principal("AE", frozenset({role}), frozenset({"AE"}))
        for operation in ALL_OPERATIONS:
            verdict = decide(who, operation, holder="AE", receiving="AE")
            assert verdict.allowed == (operation in allowed[role]), (role, operation)
            if not verdict.allowed:
                assert "needs role" in verdict.reason and len(verdict.short) <= 48


def test_what_is_held_is_only_the_holders_admin_included() -> None:
    for roles in ({"perform"}, {"admin"}):
        who = Principal("TDD2", frozenset(roles), frozenset({"TDD2"}))
        for operation in (Operation.UPDATE_HELD, Operation.FINISH):
            verdict = decide(who, operation, holder="TDD1")
            assert not verdict.allowed
            assert verdict.short == "held by TDD1"
            assert decide(who, operation, holder="TDD2").allowed


def test_subscriptions_for_another_ae_title_need_admin() -> None:
    watcher = Principal("TDD1", frozenset({"watch"}), frozenset({"TDD1", "TDD1-EVENTS"}))
    admin = Principal("TMS", frozenset({"admin"}), frozenset({"TMS"}))
    for operation in (Operation.SUBSCRIBE, Operation.UNSUBSCRIBE, Operation.SUSPEND):
        assert decide(watcher, operation, receiving="TDD1").allowed
        assert decide(watcher, operation, receiving="TDD1-EVENTS").allowed  # bound to it too
        refused = decide(watcher, operation, receiving="WATCHER")
        assert not refused.allowed and refused.short == "needs role admin for WATCHER"
        assert decide(admin, operation, receiving="WATCHER").allowed


def test_roles_are_read_strictly() -> None:
    assert parse_roles(["Perform, QUERY", "watch"]) == {"perform", "query", "watch"}
    with pytest.raises(RoleError, match="unknown role 'delete'"):
        parse_roles(["perform,delete"])


# -- the AE configuration file ------------------------------------------------------------


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "ApplicationEntities.json"
    path.write_text(json.dumps(data))
    return path


def test_the_old_format_keeps_working_and_binds_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, [{"AETitle": "TDD", "IPAddr": "127.0.0.1", "Port": 11113}])
    entry = aefile.load(path)["TDD"]
    assert (entry.address, entry.port, entry.mtls, entry.reachable) == (
        "127.0.0.1",
        11113,
        False,
        True,
    )
    assert entry.certificates == frozenset() and entry.roles == frozenset()
    assert not AccessPolicy(aefile.load(path)).admits("TDD", peer("TDD"))


def test_bindings_many_to_many(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "TDD1": {"Certificates": ["CN=tdd1", "CN=tdd1-spare"], "Roles": ["perform"]},
            "TDD1-EVENTS": {"Certificates": ["CN=tdd1"], "Roles": ["watch"]},
            "TMS": {"Certificates": ["SHA256:" + FINGERPRINT], "Roles": ["create"]},
        },
    )
    policy = AccessPolicy(aefile.load(path))
    tdd1, spare = peer("tdd1", fingerprint="cd" * 32), peer("tdd1-spare", fingerprint="ef" * 32)
    assert policy.titles_for(tdd1) == {"TDD1", "TDD1-EVENTS"}
    assert policy.titles_for(spare) == {"TDD1"}
    # pinned by fingerprint: any CN, this very certificate
    assert policy.admits("TMS", peer("whoever"))
    principal = policy.principal("TDD1-EVENTS", tdd1)
    assert principal.roles == {"watch"} and principal.titles == {"TDD1", "TDD1-EVENTS"}
    # the roles of an AE title the certificate is not bound to are not its own
    assert policy.principal("TMS", tdd1).roles == frozenset()


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"AETitle": "TDD", "Role": ["perform"]}, "unknown key 'Role' (did you mean Roles?)"),
        ({"AETitle": "TDD", "certificates": ["CN=x"]}, "did you mean Certificates?"),
        ({"AETitle": "TDD", "Roles": ["delete"]}, "unknown role 'delete'"),
        ({"AETitle": "TDD", "Certificates": ["tdd"]}, "is not a certificate identity"),
        ({"AETitle": "TDD", "Certificates": "CN=tdd", "Roles": 3}, "Roles must be a list"),
        ({"AETitle": "TDD", "IPAddr": "127.0.0.1"}, "IPAddr and Port go together"),
        ({"AETitle": "TDD", "IPAddr": "h", "Port": 70000}, "Port 70000 is not a TCP port"),
        ({"AETitle": "WAY-TOO-LONG-AE-TITLE"}, "is not a DICOM AE title"),
    ],
)
def test_a_bad_entry_is_one_line_naming_file_entry_and_key(
    tmp_path: Path, entry: dict[str, object], words: str
) -> None:
    path = write(tmp_path, [entry])
    with pytest.raises(TdwiiError) as caught:
        aefile.load(path)
    message = caught.value.message
    assert words in message and str(path) in message and "entry 1" in message
    assert "\n" not in message


def test_other_keys_are_kept_and_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, [{"AETitle": "TDD", "Comment": "bunker 2", "Roles": ["query"]}])
    assert aefile.load(path)["TDD"].roles == {"query"}


def test_update_entry_binds_and_keeps_everything_else(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "WATCHER": {"IPAddr": "127.0.0.1", "Port": 11113, "Comment": "kept"},
            "TDD1": {"Certificates": ["CN=tdd1"], "Roles": ["query"]},
        },
    )
    path.chmod(0o600)
    first = aefile.update_entry(path, "TDD1", "CN=tdd1-new", frozenset({"perform", "query"}))
    assert not first.created and not first.file_created
    assert first.entry.identities == ("CN=tdd1", "CN=tdd1-new")
    assert first.entry.roles == {"perform", "query"}
    again = aefile.update_entry(path, "TDD1", "cn=tdd1-new", frozenset({"perform"}))
    assert again.entry.identities == ("CN=tdd1", "CN=tdd1-new")  # the same identity, once
    added = aefile.update_entry(
        path, "TDD2", "CN=tdd2", frozenset(), address="127.0.0.1", port=11114, mtls=True
    )
    assert added.created and added.entry.reachable and added.entry.mtls
    data = json.loads(path.read_text())
    assert data["WATCHER"] == {"IPAddr": "127.0.0.1", "Port": 11113, "Comment": "kept"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the file's mode is kept


def test_update_entry_never_rewrites_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "ae.json"
    path.write_text('[{"AETitle": "TDD", "Port": "x"')
    before = path.read_bytes()
    with pytest.raises(TdwiiError, match="not valid JSON"):
        aefile.update_entry(path, "TDD1", "CN=tdd1", frozenset({"perform"}))
    with pytest.raises(TdwiiError, match="not a certificate identity"):
        aefile.update_entry(tmp_path / "new.json", "TDD1", "tdd1", frozenset())
    assert path.read_bytes() == before and not (tmp_path / "new.json").exists()
    created = aefile.update_entry(tmp_path / "new.json", "TDD1", "CN=tdd1", frozenset())
    assert created.file_created and json.loads((tmp_path / "new.json").read_text()) == [
        {"AETitle": "TDD1", "Certificates": ["CN=tdd1"], "Roles": []}
    ]


def test_the_readme_has_the_roles_table_the_server_enforces() -> None:
    from tdwii_cli.server.authorization import markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert markdown_table() in readme
    for role in ROLES:
        assert f"| {role}" in markdown_table(), role  # every role is in it
