"""The seeded PDU fuzzer (`bench/fuzz_server.py`) for a short time, as CI runs it: no crash,
no dead thread, no stuck slot, a sound database afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FUZZER = Path(__file__).resolve().parents[1] / "bench" / "fuzz_server.py"


def test_fuzzer_finds_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, str(FUZZER), "--seconds", "8", "--seed", "11"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "integrity ok" in proc.stdout
    connections = int(proc.stdout.split("fuzzed ")[1].split()[0])
    assert connections > 100  # it really fuzzed
