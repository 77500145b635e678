"""Where output goes (`tdwii_cli.cli.console`): logs on stderr, rich only on a terminal and only
once something is logged, a peer certificate shown as a table there."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from conftest import PKI_SERVER


def test_a_quiet_run_on_a_terminal_never_imports_rich() -> None:
    """The rich handler is made on the first record: until then rich stays unimported.
    stderr is a real pseudo-terminal here."""
    code = (
        "import sys, logging\n"
        "from tdwii_cli.cli import console\n"
        "assert console.stderr_is_terminal()\n"
        "console.setup_logging(logging.WARNING)\n"
        "logging.getLogger('tdwii.net').info('not shown at the default level')\n"
        "assert 'rich' not in sys.modules, 'rich imported before any record'\n"
        "logging.getLogger('tdwii.net').warning('now rich is needed')\n"
        "assert 'rich.logging' in sys.modules\n"
        "print('ok')\n"
    )
    leader, follower = os.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "TERM": "xterm"},
            text=True,
            timeout=60,
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0, shown.decode(errors="replace")
    assert proc.stdout.strip() == "ok"
    assert b"now rich is needed" in shown


def test_a_record_carrying_a_certificate_is_rendered_as_its_table(pki_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from tdwii_cli.cli import console
    from tdwii_cli.tls.certinfo import cert_info

    info = cert_info(
        __import__("ssl").PEM_cert_to_DER_cert((pki_dir / f"{PKI_SERVER}.pem").read_text())
    )
    handler = console._rich_handler(console=Console(record=True, width=120), show_path=False)
    record = logging.LogRecord("tdwii.net", logging.DEBUG, __file__, 1, "plain text", (), None)
    record.certificate = info
    record.title = "peer certificate of 127.0.0.1:1"
    rendered = handler.render_message(record, "plain text")  # type: ignore[attr-defined]
    assert isinstance(rendered, Table)
    plain = logging.LogRecord("tdwii.net", logging.INFO, __file__, 1, "a line", (), None)
    assert not isinstance(handler.render_message(plain, "a line"), Table)  # type: ignore[attr-defined]
    handler.handle(record)
    shown = handler.console.export_text()  # type: ignore[attr-defined]
    assert "peer certificate of 127.0.0.1:1" in shown and "worklistmanager" in shown
    assert "SHA-256" in shown and "plain text" not in shown
