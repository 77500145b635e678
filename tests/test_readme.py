"""The README's Quick start, run as a newcomer pastes it (after the `pip install .`, which the
test environment has done): in a fresh folder with the repository's `ups_instances/`, on a
free port instead of 2762."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```sh\n(.+?)\n```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_quick_start_runs_from_a_fresh_folder(tmp_path: Path) -> None:
    command = quick_start()
    assert "sleep" not in command and "wait $srv" in command and "--wait" in command
    assert command.startswith("pip install . && ")
    shutil.copytree(ROOT / "ups_instances", tmp_path / "ups_instances")
    port = str(free_port())
    script = command.removeprefix("pip install . && ").replace("2762", port)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    assert shutil.which("tdwii", path=env["PATH"]), "the tdwii entry point is not installed"
    proc = subprocess.run(
        ["bash", "-c", f"set -e; {script}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    created = len(list((ROOT / "ups_instances").glob("*.dcm")))
    assert f"{created} created over 1 association" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr
    assert (tmp_path / "tdwii.sqlite").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "tdwii.sqlite-wal").exists()  # closed cleanly before `wait` returned
