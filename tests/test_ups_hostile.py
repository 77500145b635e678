"""`tdwii ups` against a server that lies: an SCP on tdwii's own acceptor (a real listening
socket) whose handler answers with garbage data sets, odd statuses, or not at all. Every
case must be one line and an exit code, never a traceback; and the receiver (`watch`) must
survive a sender that lies."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import free_port, one_error_line, wait_until
from tdwii_cli.dicom.uids import UPS_EVENT, UPS_PULL, UPS_PUSH, UPS_QUERY, UPS_WATCH, VERIFICATION
from tdwii_cli.scp.acceptor import Acceptor, AcceptorSettings
from tdwii_cli.scp.limits import LimitSettings
from tdwii_cli.scp.messages import Reply, Request
from tdwii_cli.scp.session import SessionSettings

GARBAGE = b"\x10\x00\x10\x00PN\xff\x7fnot a data set at all"
Handler = Callable[[Request], Iterator[Reply]]


@pytest.fixture
def liar() -> Iterator[Callable[[Handler], int]]:
    """Start an SCP with the given handler; its port."""
    started: list[Acceptor] = []

    def start(handler: Handler) -> int:
        settings = AcceptorSettings(
            ae_title="LIAR",
            abstract_syntaxes=(VERIFICATION, UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_QUERY),
            limits=LimitSettings(),
            session=SessionSettings(
                acse_timeout=5, dimse_timeout=5, network_timeout=10, max_pdu=16382,
                max_message=1 << 20,
            ),
            handshake_timeout=5,
        )  # fmt: skip
        acceptor = Acceptor(settings, handler, None)
        acceptor.start("127.0.0.1", 0)
        started.append(acceptor)
        return acceptor.address[1]

    yield start
    for acceptor in started:
        acceptor.stop(0.5)


def ups(port: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "ups", args[0], "127.0.0.1", str(port), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={
            "PATH": "/usr/bin:/bin",
            "TDWII_TRANSACTIONS": str(cwd / "t.json"),
            "HOME": str(cwd),
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        },
    )


def test_a_c_find_match_that_is_not_a_data_set(
    liar: Callable[[Handler], int], tmp_path: Path
) -> None:
    def handler(request: Request) -> Iterator[Reply]:
        yield Reply(0xFF00, data=GARBAGE)
        yield Reply(0x0000)

    proc = ups(liar(handler), "find", "--station", "X", cwd=tmp_path)
    assert proc.returncode == 1
    assert "C-FIND: a response that is not a data set" in one_error_line(proc)


def test_failure_and_unknown_statuses_are_exit_64_in_hex_and_words(
    liar: Callable[[Handler], int], tmp_path: Path
) -> None:
    def handler(request: Request) -> Iterator[Reply]:
        if request.command.field == 0x0020:  # C-FIND
            yield Reply(0xC000, "the index is on fire")
        else:
            yield Reply(0xD123, "")

    port = liar(handler)
    found = ups(port, "find", cwd=tmp_path)
    assert found.returncode == 64
    line = one_error_line(found)
    assert "0xC000" in line and "the index is on fire" in line
    claimed = ups(port, "claim", "1.2.3.4", cwd=tmp_path)
    assert claimed.returncode == 64 and "0xD123" in one_error_line(claimed)
    assert not (tmp_path / "t.json").exists()  # a refused claim records nothing


def test_an_n_get_answer_that_is_not_a_data_set(
    liar: Callable[[Handler], int], tmp_path: Path
) -> None:
    def handler(request: Request) -> Iterator[Reply]:
        yield Reply(0x0000, data=GARBAGE)

    proc = ups(liar(handler), "get", "1.2.3.4", cwd=tmp_path)
    assert proc.returncode == 1 and "is not a data set" in one_error_line(proc)
    final = ups(liar(handler), "complete", "1.2.3.4", "--transaction-uid", "2.25.1", cwd=tmp_path)
    assert final.returncode == 1 and "cannot be read" in one_error_line(final)


def test_a_server_that_never_answers(liar: Callable[[Handler], int], tmp_path: Path) -> None:
    import threading

    release = threading.Event()

    def handler(request: Request) -> Iterator[Reply]:
        release.wait(10)
        yield Reply(0x0000)

    try:
        proc = ups(liar(handler), "claim", "1.2.3.4", "-td", "1", cwd=tmp_path)
    finally:
        release.set()
    assert proc.returncode == 62 and "did not answer in time" in one_error_line(proc)


def test_watch_survives_a_sender_that_lies(tmp_path: Path) -> None:
    """Garbage event information is 0110 and a warning; an operation a receiver does not
    serve is 0211; a good report after them is printed."""
    from tdwii_cli.net.association import open_association, propose
    from tdwii_cli.net.dimse import N_CREATE_RQ, N_EVENT_REPORT_RQ, Command
    from tdwii_cli.net.options import ScuOptions

    port = free_port()
    out, err = tmp_path / "watch.out", tmp_path / "watch.err"
    with out.open("wb") as o, err.open("wb") as e:
        command = [sys.executable, "-m", "tdwii_cli", "ups", "watch", "-p", str(port)]
        watch = subprocess.Popen([*command, "-ba", "127.0.0.1"], stdout=o, stderr=e, cwd=tmp_path)
    try:
        wait_until(lambda: "listening on" in err.read_text(), 30, err.read_text)
        contexts = propose([UPS_EVENT, UPS_PUSH])
        with open_association(
            "127.0.0.1", port, None, ScuOptions(called_aet="TDWII"), contexts, required=[UPS_EVENT]
        ) as assoc:
            event = assoc.context(UPS_EVENT)

            def report(data: bytes, event_type: int = 1) -> int:
                cmd = Command(
                    N_EVENT_REPORT_RQ,
                    message_id=assoc.next_message_id(),
                    sop_class=UPS_PUSH,
                    sop_instance="1.2.3.4.5",
                    event_type=event_type,
                    has_dataset=True,
                )
                return int(next(assoc.request(cmd, data, event)).command.status or 0)

            assert report(GARBAGE) == 0x0110
            create = Command(
                N_CREATE_RQ,
                message_id=assoc.next_message_id(),
                sop_class=UPS_PUSH,
                has_dataset=True,
            )
            assert next(assoc.request(create, b"", event)).command.status == 0x0211
            good = b"\x74\x00\x00\x10CS\x0a\x00SCHEDULED "  # (0074,1000) Procedure Step State
            assert report(good) == 0x0000
        wait_until(lambda: "SCHEDULED" in out.read_text(), 10, out.read_text)
        assert out.read_text().count("\n") == 1
        assert "cannot be read" in err.read_text()
    finally:
        watch.terminate()
        watch.wait(20)
    assert watch.returncode == 0 and "Traceback" not in err.read_text()
