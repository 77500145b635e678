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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdwii_cli.access.aefile import KnownAE
from tdwii_cli.errors import TdwiiError
from tdwii_cli.net import floodlog
from tdwii_cli.scp.acceptor import Acceptor, wildcard_address
from tdwii_cli.server.acceptor import ups_acceptor
from tdwii_cli.server.auditing import Auditor, build_auditor
from tdwii_cli.server.authorization import Authorizer, check_authorization
from tdwii_cli.server.config import ServeConfig, load_application_entities
from tdwii_cli.server.store import WorkitemStore
from tdwii_cli.server.ups_scp import UpsScp
from tdwii_cli.tls.options import TlsOptions

if TYPE_CHECKING:
    from tdwii_cli.tls.revocation import CrlWatch

log = logging.getLogger("tdwii.serve")


def _server_context(tls: TlsOptions) -> ssl.SSLContext:
    from tdwii_cli.tls.context import build_server_context

    return build_server_context(tls, num_tickets=0)  # no client of ours resumes: save them


def _warn_key_type(tls: TlsOptions, ctx: ssl.SSLContext) -> None:
    """Warn when our key cannot serve the profile's TLS 1.2 suites (EC with bcp195-nd)."""
    from tdwii_cli.tls.context import Context, key_type_problem

    if isinstance(ctx, Context) and ctx.own is not None:
        problem = key_type_problem(tls.profile, ctx.own.key_type)
        if problem:
            log.warning("%s", problem)


def _file_identity(path: Path | None) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of `path`, to notice a change (None when it is not there)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


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
        self.crl_watch: CrlWatch | None = None
        self.auditor: Auditor | None = None
        self._ae_seen = _file_identity(config.ae_config)
        self._stop = threading.Event()
        self._reload = threading.Event()
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
        """Check our certificate, open the store and the audit spool, bind the port, start
        the UPS SCP and accept (in a background thread). Raises before anything runs when
        one fails."""
        config = self.config
        check_authorization(config, self.tls, self.known_aes)
        floodlog.configure(config.log_summary)
        ssl_context: ssl.SSLContext | None = None
        if self.tls.enabled:
            from tdwii_cli.tls.revocation import CrlWatch

            ssl_context = _server_context(self.tls)
            _warn_key_type(self.tls, ssl_context)
            self.crl_watch = CrlWatch(
                self.tls, _server_context, self._install, reloaded=self._tls_reloaded
            )
            self.crl_watch.check_at_start()
        auditor = build_auditor(config, self.tls)
        try:
            self.store = WorkitemStore(config.database_location)
        except BaseException:
            auditor.stop(0)
            raise
        try:
            crl_watch = self.crl_watch
            authorizer = Authorizer(
                self.known_aes,
                enforce=config.authorize,
                auditor=auditor,
                crl=(lambda: crl_watch.facts) if crl_watch is not None else None,
            )
            scp = UpsScp(
                self.store,
                ae_title=config.ae_title,
                known_aes=self.known_aes,
                tls=self.tls,  # event reports go over mTLS with our node certificate
                retention=config.retention_seconds,
                auditor=auditor,
                authorizer=authorizer,
            )
            acceptor = ups_acceptor(config, scp, ssl_context)
            bind = config.bind_address
            acceptor.start(bind if bind not in ("", "*") else wildcard_address(), self.port)
        except BaseException:
            self.store.close()
            self.store = None
            auditor.stop(0)
            raise
        self.acceptor = acceptor
        self.scp = scp
        self.auditor = auditor
        auditor.start()
        scp.start()
        if self.crl_watch is not None:
            self.crl_watch.start()

    def _install(self, ssl_context: ssl.SSLContext) -> None:
        if self.acceptor is not None:
            self.acceptor.set_ssl_context(ssl_context)

    def _tls_reloaded(self, why: str, ok: bool, detail: str) -> None:
        if self.auditor is not None:
            self.auditor.reloaded(
                f"TLS set-up ({why})", self.tls.crl or self.tls.cert, ok, detail, roles=False
            )

    def reload_application_entities(self, why: str = "reload") -> bool:
        """Reread the AE configuration (addresses, bindings, roles) and use it from the next
        decision on; False when it cannot be read (the running one stays)."""
        path = self.config.ae_config
        if path is None or self.scp is None:
            return False
        self._ae_seen = _file_identity(path)
        try:
            known = load_application_entities(path)
            check_authorization(self.config, self.tls, known)
        except TdwiiError as exc:
            log.error("%s: AE configuration not reloaded, the previous one stays: %s", why, exc)
            if self.auditor is not None:
                self.auditor.reloaded("AE configuration", path, False, exc.message, roles=True)
            return False
        self.known_aes = known
        self.scp.set_known_aes(known)
        log.info("%s: AE configuration %s reloaded: %d AE title(s)", why, path, len(known))
        if self.auditor is not None:
            self.auditor.reloaded(
                "AE configuration", path, True, f"{len(known)} AE title(s)", roles=True
            )
        return True

    def _ae_config_changed(self) -> bool:
        path = self.config.ae_config
        return path is not None and _file_identity(path) != self._ae_seen

    def reload_tls(self, why: str = "reload") -> bool:
        """Reread our certificate, key, CA and CRL now (what SIGHUP does); False when
        there is no TLS or the new files cannot be used (the running set-up stays)."""
        if self.crl_watch is None:
            if self.config.ae_config is None:
                log.warning("%s: nothing to reload (no TLS)", why)
            return False
        return self.crl_watch.reload(why)

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let associations serving a request finish (up to `grace` s),
        abort the rest, stop the SCP, close the database."""
        grace = self.config.shutdown_grace if grace is None else grace
        if self.crl_watch is not None:
            self.crl_watch.stop()
        if self.acceptor is not None:
            self.acceptor.stop(grace)
            self.acceptor = None
        if self.scp is not None:
            try:
                self.scp.stop()
            except Exception as exc:  # pragma: no cover - shutdown must go on
                log.warning("while stopping: %s", exc)
            self.scp = None
        if self.auditor is not None:
            try:
                self.auditor.stop()
            except Exception as exc:  # pragma: no cover - shutdown must go on
                log.warning("while stopping the audit trail: %s", exc)
            self.auditor = None
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
        """Block until SIGINT/SIGTERM, then stop cleanly; SIGHUP rereads the TLS files.
        Returns the exit code (0)."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        try:
            while not self._stop.wait(0.2):
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload_tls("SIGHUP")
                    self.reload_application_entities("SIGHUP")
                elif self._ae_config_changed():
                    self.reload_application_entities("AE configuration file changed")
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0
