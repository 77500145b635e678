"""The command line as a whole: a short option means one thing in every command."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import click

# The same meaning under two names: our own AE title (the server's, and the caller's).
SAME_MEANING = {"-aet": {"--ae-title", "--calling-aet"}}


def _options(command: click.Command, path: str, into: dict[str, set[tuple[str, str]]]) -> None:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _options(sub, f"{path} {name}", into)
        return
    for param in command.params:
        names = [*param.opts, *param.secondary_opts]
        longs = " ".join(sorted(n for n in names if n.startswith("--")))
        for name in names:
            if name.startswith("-") and not name.startswith("--"):
                into[name].add((longs, path))


def test_a_short_option_means_one_thing_everywhere() -> None:
    from tdwii_cli.cli.app import COMMANDS, load_command

    shorts: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for name in COMMANDS:
        _options(load_command(name), name, shorts)
    assert "-c" in shorts and "-v" in shorts and "-mtls" in shorts  # the walk saw them all
    for short, uses in shorts.items():
        meanings = {longs for longs, _ in uses}
        if len(meanings) > 1:
            allowed = SAME_MEANING.get(short, set())
            assert meanings <= allowed, f"{short}: {sorted(uses)}"
    assert {longs for longs, _ in shorts["-c"]} == {"--config"}


def test_echo_count_has_no_short_c() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "echo", "-c", "2", "localhost", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "No such option '-c'" in proc.stderr
