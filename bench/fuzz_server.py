#!/usr/bin/env python3
"""Fuzz `tdwii serve`'s upper layer: seeded random PDU streams, bounded in time, then prove
the server is whole.

Each connection takes a valid conversation (A-ASSOCIATE-RQ, then C-ECHO, N-CREATE,
C-FIND, N-GET, N-ACTION, N-SET requests, release) and breaks it at random: flipped
bytes, lying length fields, truncations, PDUs of unknown or unexpected type, junk
in between, fragments split at random and sent slowly. Four threads fuzz at once.
Afterwards the server must still run, answer a C-ECHO, accept
`--max-associations` associations at once (no slot is stuck), be back to its
thread count, have logged no traceback, stop with exit 0, and its database must pass
`PRAGMA integrity_check`.

    python bench/fuzz_server.py [--seconds 20] [--seed 1] [--workers 4]

Exits 1 (and says why) when any check fails.
"""

from __future__ import annotations

import argparse
import random
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tdwii_cli.dicom import codec
from tdwii_cli.dicom.uids import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    UPS_PULL,
    UPS_PUSH,
    UPS_SOP_CLASSES,
    VERIFICATION,
)
from tdwii_cli.net import dimse, pdu
from tdwii_cli.net.channel import PduStream, read_pdu
from tdwii_cli.net.dimse import Command
from tdwii_cli.net.errors import UpperLayerError
from tdwii_cli.ups.workitem import build_workitem

MAX_ASSOCIATIONS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


class Conversations:
    """Valid conversations to break: the PDUs of each, as bytes."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        ds = build_workitem(patient_id="FUZZ", patient_name="Fuzz^Test", label="fuzz")
        self.workitem = codec.encode(ds, EXPLICIT_VR_LE)
        self.uid = str(ds.SOPInstanceUID)
        query = build_workitem(patient_id="", patient_name="", label="")
        self.identifier = codec.encode(query, EXPLICIT_VR_LE)

    def contexts(self) -> list[pdu.PresentationContext]:
        syntaxes = (VERIFICATION, *UPS_SOP_CLASSES)
        return [
            pdu.PresentationContext(2 * i + 1, uid, (EXPLICIT_VR_LE, IMPLICIT_VR_LE))
            for i, uid in enumerate(syntaxes)
        ]

    def requests(self) -> list[bytes]:
        rng = self.rng
        out = []
        for mid in range(1, rng.randint(1, 5) + 1):
            kind = rng.choice(["echo", "create", "find", "get", "action", "set"])
            if kind == "echo":
                cmd = Command(dimse.C_ECHO_RQ, message_id=mid, sop_class=VERIFICATION)
                out.append(dimse.encode_message(1, cmd, None, 16384))
            elif kind == "create":
                uid = self.uid if rng.random() < 0.3 else f"2.25.{rng.getrandbits(64)}"
                cmd = Command(
                    dimse.N_CREATE_RQ,
                    message_id=mid,
                    sop_class=UPS_PUSH,
                    sop_instance=uid,
                    has_dataset=True,
                )
                out.append(dimse.encode_message(3, cmd, self.workitem, 16384))
            elif kind == "find":
                cmd = Command(
                    dimse.C_FIND_RQ,
                    message_id=mid,
                    sop_class=UPS_PULL,
                    priority=0,
                    has_dataset=True,
                )
                out.append(dimse.encode_message(7, cmd, self.identifier, 16384))
            elif kind == "get":
                cmd = Command(
                    dimse.N_GET_RQ, message_id=mid, sop_class=UPS_PUSH, sop_instance=self.uid
                )
                out.append(dimse.encode_message(3, cmd, None, 16384))
            else:
                field = dimse.N_ACTION_RQ if kind == "action" else dimse.N_SET_RQ
                cmd = Command(
                    field,
                    message_id=mid,
                    sop_class=UPS_PUSH,
                    sop_instance=self.uid,
                    action_type=1 if kind == "action" else None,
                    has_dataset=True,
                )
                out.append(dimse.encode_message(3, cmd, self.identifier[:200], 16384))
        return out

    def conversation(self) -> list[bytes]:
        rq = pdu.associate_rq("FUZZER", "UPSSCP", self.contexts())
        return [rq, *self.requests(), pdu.RELEASE_RQ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random change to a PDU's bytes."""
    buf = bytearray(data)
    choice = rng.random()
    if choice < 0.35 and buf:  # flip a few bytes
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.getrandbits(8)
    elif choice < 0.55 and len(buf) >= 6:  # lie about the length
        lie = rng.choice([0, 1, len(buf) - 7, len(buf) + 1, 0xFFFFFFFF, rng.getrandbits(32)])
        buf[2:6] = struct.pack(">L", max(0, lie) & 0xFFFFFFFF)
    elif choice < 0.7:  # truncate
        del buf[rng.randrange(len(buf) + 1) :]
    elif choice < 0.8:  # an unknown or unexpected PDU type
        buf[0:1] = bytes([rng.choice([0, 1, 2, 3, 6, 8, 0x42, 0xFF])])
    elif choice < 0.9:  # junk in the middle
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = rng.randbytes(rng.randint(1, 64))
    else:  # a mangled item length inside the PDU
        if len(buf) > 80:
            at = rng.randrange(6, len(buf) - 2)
            buf[at : at + 2] = struct.pack(">H", rng.getrandbits(16))
    return bytes(buf)


def one_connection(port: int, rng: random.Random, talk: Conversations, stats: dict) -> None:
    pdus = talk.conversation()
    keep_rq = rng.random() < 0.6  # reach DIMSE more often than not
    for i in range(len(pdus)):
        if (i > 0 or not keep_rq) and rng.random() < 0.3:
            pdus[i] = mutate(rng, pdus[i])
    if rng.random() < 0.2:
        pdus.insert(rng.randrange(len(pdus) + 1), rng.randbytes(rng.randint(1, 300)))
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    except OSError:
        stats["refused"] += 1
        return
    with sock:
        sock.settimeout(0.5)
        try:
            for data in pdus:
                if rng.random() < 0.2:  # split and send slowly
                    cut = rng.randrange(len(data) + 1)
                    sock.sendall(data[:cut])
                    time.sleep(rng.random() * 0.05)
                    data = data[cut:]
                sock.sendall(data)
                stats["pdus"] += 1
                if rng.random() < 0.5:
                    try:
                        if not sock.recv(65536):
                            stats["closed"] += 1
                            return
                    except TimeoutError:
                        pass
            while sock.recv(65536):
                pass
            stats["closed"] += 1
        except TimeoutError:
            stats["timeouts"] += 1
        except OSError:
            stats["reset"] += 1


def fuzz(port: int, seconds: float, seed: int, workers: int) -> dict:
    stats = {"connections": 0, "pdus": 0, "closed": 0, "reset": 0, "timeouts": 0, "refused": 0}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        talk = Conversations(rng)
        local = dict.fromkeys(stats, 0)
        while time.monotonic() < end:
            one_connection(port, rng, talk, local)
            local["connections"] += 1
        with lock:
            for key, value in local.items():
                stats[key] += value

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return stats


def echo_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            contexts = [pdu.PresentationContext(1, VERIFICATION, (IMPLICIT_VR_LE,))]
            sock.sendall(pdu.associate_rq("CHECK", "UPSSCP", contexts))
            if read_pdu(sock)[0] != pdu.A_ASSOCIATE_AC:
                return False
            cmd = Command(dimse.C_ECHO_RQ, message_id=1, sop_class=VERIFICATION)
            sock.sendall(dimse.encode_message(1, cmd, None, 16384))
            ok = PduStream(sock).read_message().command.status == 0
            sock.sendall(pdu.RELEASE_RQ)
            return ok and read_pdu(sock)[0] == pdu.A_RELEASE_RP
    except (OSError, UpperLayerError):
        return False


def all_slots_free(port: int) -> bool:
    """`MAX_ASSOCIATIONS` associations at once are all accepted."""
    socks = []
    try:
        for _ in range(MAX_ASSOCIATIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(sock)
            contexts = [pdu.PresentationContext(1, VERIFICATION, (IMPLICIT_VR_LE,))]
            sock.sendall(pdu.associate_rq("CHECK", "UPSSCP", contexts))
            if read_pdu(sock)[0] != pdu.A_ASSOCIATE_AC:
                return False
        return True
    except (OSError, UpperLayerError):
        return False
    finally:
        for sock in socks:
            try:
                sock.sendall(pdu.RELEASE_RQ)
                read_pdu(sock)
            except (OSError, UpperLayerError):
                pass
            sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tdwii-fuzz-"))
    port = free_port()
    db = work / "fuzz.sqlite"
    log = work / "serve.log"
    cmd = [sys.executable, "-m", "tdwii_cli", "serve", "--port", str(port), "-ba", "127.0.0.1"]
    cmd += ["--db", str(db), "-ta", "1", "-td", "1", "-tn", "2", "--shutdown-grace", "2"]
    cmd += ["--max-associations", str(MAX_ASSOCIATIONS)]
    cmd += ["--max-associations-per-host", str(MAX_ASSOCIATIONS), "-v"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh)
    problems: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                print(log.read_text(errors="replace"), file=sys.stderr)
                return 1
            time.sleep(0.05)
        all_slots_free(port)  # warm up; then the association threads retire when idle
        time.sleep(2.5)
        baseline = threads_of(proc.pid)
        begin = time.monotonic()
        stats = fuzz(port, args.seconds, args.seed, args.workers)
        took = time.monotonic() - begin
        time.sleep(2.5)  # every deadline of the fuzzed connections has passed
        if proc.poll() is not None:
            problems.append(f"the server exited ({proc.returncode})")
        else:
            if not echo_ok(port):
                problems.append("C-ECHO failed after fuzzing")
            if not all_slots_free(port):
                problems.append(f"{MAX_ASSOCIATIONS} associations at once were not all accepted")
            time.sleep(2.5)  # idle association threads retire
            now = threads_of(proc.pid)
            if now > baseline + 1:
                problems.append(f"threads: {now} after fuzzing, {baseline} before")
        proc.terminate()
        if proc.wait(15) != 0:
            problems.append(f"exit code {proc.returncode} at SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    for needle in ("Traceback", "association failed", "unexpected error"):
        if needle in text:
            line = next(x for x in text.splitlines() if needle in x)
            problems.append(f"the log has {needle!r}: {line}")
    with sqlite3.connect(db) as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM workitems").fetchone()[0]
    if check != "ok":
        problems.append(f"integrity_check: {check}")
    aborted = text.count("association aborted")
    print(
        f"fuzzed {stats['connections']} connections ({stats['pdus']} PDUs) in {took:.1f} s, "
        f"seed {args.seed}: server closed {stats['closed']}, reset {stats['reset']}, "
        f"client timeouts {stats['timeouts']}, refused {stats['refused']}; "
        f"{aborted} aborts logged, {stored} workitems stored, integrity {check}"
    )
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if problems:
        print(f"server log kept in {log}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
