"""The running worklist manager: the store, the UPS SCP and the association server, started
and stopped together; SIGINT/SIGTERM stop it cleanly.

`WorklistManager(config, tls)` is what `tdwii serve` runs, callable from Python:
`start()` opens the store, starts the `UpsScp` and listens (in a background
thread); `stop()` stops accepting, lets running associations finish (bounded),
stops the SCP and closes the database; `serve_until_signal()` blocks until
SIGINT/SIGTERM, then stops (a second signal exits at once).
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
from collections.abc import Mapping
from typing import Any

from tdwii_cli.scp.acceptor import Acceptor, wildcard_address
from tdwii_cli.server.acceptor import ups_acceptor
from tdwii_cli.server.config import KnownAE, ServeConfig
from tdwii_cli.server.store import WorkitemStore
from tdwii_cli.server.ups_scp import UpsScp
from tdwii_cli.tls.options import TlsOptions

log = logging.getLogger("tdwii.serve")


class WorklistManager:
    """The running worklist manager: store + `UpsScp` + `Acceptor` (+ signals)."""

    def __init__(
        self,
        config: ServeConfig,
        tls: TlsOptions,
        known_aes: Mapping[str, KnownAE] | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        self.known_aes = dict(known_aes or {})
        self.store: WorkitemStore | None = None
        self.scp: UpsScp | None = None
        self.acceptor: Acceptor | None = None
        self._stop = threading.Event()
        self._signals = 0

    @property
    def port(self) -> int:
        """The port configured: as given, else 2762 with TLS and 11112 without."""
        return self.config.effective_port(self.tls.enabled)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually listened on."""
        assert self.acceptor is not None
        return self.acceptor.address

    def start(self) -> None:
        """Check our certificate, open the store, bind the port, start the UPS SCP and
        accept (in a background thread). Raises before anything runs when one fails."""
        config = self.config
        ssl_context: ssl.SSLContext | None = None
        if self.tls.enabled:
            from tdwii_cli.tls.context import build_server_context

            ssl_context = build_server_context(self.tls)
            ssl_context.num_tickets = 0  # no client of ours resumes: save the tickets' cost
        self.store = WorkitemStore(config.database_location)
        try:
            scp = UpsScp(
                self.store,
                ae_title=config.ae_title,
                known_aes=self.known_aes,
                tls=self.tls,  # event reports go over mTLS with our node certificate
                retention=config.retention_seconds,
            )
            acceptor = ups_acceptor(config, scp, ssl_context)
            bind = config.bind_address
            acceptor.start(bind if bind not in ("", "*") else wildcard_address(), self.port)
        except BaseException:
            self.store.close()
            self.store = None
            raise
        self.acceptor = acceptor
        self.scp = scp
        scp.start()

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let associations serving a request finish (up to `grace` s),
        abort the rest, stop the SCP, close the database."""
        grace = self.config.shutdown_grace if grace is None else grace
        if self.acceptor is not None:
            self.acceptor.stop(grace)
            self.acceptor = None
        if self.scp is not None:
            try:
                self.scp.stop()
            except Exception as exc:  # pragma: no cover - shutdown must go on
                log.warning("while stopping: %s", exc)
            self.scp = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        if self._signals > 1:
            os.write(2, b"tdwii serve: second signal, exiting now\n")
            os._exit(128 + signum)
        log.warning(
            "%s received: stopping (send it again to exit at once)", signal.Signals(signum).name
        )
        self._stop.set()

    def serve_until_signal(self) -> int:
        """Block until SIGINT/SIGTERM, then stop cleanly; return the exit code (0)."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while not self._stop.wait(0.5):
                pass
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0
