"""A server's CRL kept current while it runs: reread when the file changes or on request.

OpenSSL reads a CRL into the context once; a CRL that changes (a device revoked) or
passes its nextUpdate (every client then refused) needs a fresh context. `CrlWatch`
polls the CRL file's identity (inode, size, mtime) every `interval` seconds, builds a
new server context when it changes (or when `reload()` is called, e.g. on SIGHUP) and
hands it to `install`; connections already up keep theirs. A CRL that cannot be used
is logged and the previous context stays. `crl_facts()` checks a CRL against the CA and
`expiry_line()` says when it must be reissued, in good time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tdwii_cli.clock import utc_now
from tdwii_cli.errors import TdwiiError
from tdwii_cli.pki.policy import CRL_WARNING_DAYS
from tdwii_cli.tls.options import TlsOptions

log = logging.getLogger("tdwii.tls")

_WARN_EVERY = dt.timedelta(hours=6)


@dataclass(frozen=True)
class CrlFacts:
    """What a server needs to know of its CRL: how many it revokes, when it runs out."""

    path: Path
    revoked: int
    next_update: dt.datetime | None
    serials: frozenset[int] = frozenset()  # the serial numbers it revokes


def crl_facts(opts: TlsOptions) -> CrlFacts:
    """Read `opts.crl` and check that one of `opts.ca` signed it (one-line `TdwiiError`)."""
    from tdwii_cli.pki.certs import load_certs
    from tdwii_cli.pki.crl import load_crl

    assert opts.crl is not None
    crl = load_crl(opts.crl)
    issuers = [cert for ca in opts.ca for cert in load_certs(ca)]
    if not any(_signed(crl, issuer) for issuer in issuers):
        raise TdwiiError(
            f"CRL {opts.crl} is not signed by the trusted CA ({', '.join(map(str, opts.ca))})",
            hint="use the CRL of the CA that issues the clients' certificates",
        )
    serials = frozenset(entry.serial_number for entry in crl)
    return CrlFacts(opts.crl, len(serials), crl.next_update_utc, serials)


def _signed(crl: object, issuer: object) -> bool:
    try:
        return bool(crl.is_signature_valid(issuer.public_key()))  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return False


def expiry_line(facts: CrlFacts, now: dt.datetime | None = None) -> tuple[int, str]:
    """(logging level, line) about `facts`' nextUpdate; (0, "") while it is far off."""
    if facts.next_update is None:
        return 0, ""
    now = now or utc_now()
    when = f"{facts.next_update:%Y-%m-%d %H:%M} UTC"
    if facts.next_update <= now:
        return logging.ERROR, (
            f"CRL {facts.path} passed its next update on {when}: every client is refused "
            "until it is reissued (tdwii pki crl); it is reread as soon as it changes"
        )
    left = facts.next_update - now
    if left < dt.timedelta(days=CRL_WARNING_DAYS):
        days = left.total_seconds() / 86400
        return logging.WARNING, (
            f"CRL {facts.path} runs out on {when} (in {days:.1f} days): after that every "
            "client is refused; reissue it before then (tdwii pki crl), it is reread when "
            "it changes"
        )
    return 0, ""


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class CrlWatch:
    """Rebuild the server context when the CRL changes; see the module docstring."""

    def __init__(
        self,
        opts: TlsOptions,
        build: Callable[[TlsOptions], ssl.SSLContext],
        install: Callable[[ssl.SSLContext], None],
        *,
        interval: float = 1.0,
        reloaded: Callable[[str, bool, str], None] | None = None,
    ) -> None:
        self.opts = opts
        self.build = build
        self.install = install
        self.interval = interval
        self.reloaded = reloaded  # (why, whether it is in use, what) after each reload
        self.facts: CrlFacts | None = None
        self._seen = _identity(opts.crl) if opts.crl else None
        self._warned: tuple[int, dt.datetime] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def check_at_start(self) -> None:
        """Read the CRL before serving: refuse a bad one, say what it is, warn on expiry."""
        if self.opts.crl is None:
            return
        self.facts = crl_facts(self.opts)
        log.info(
            "revocation: checking clients against %s (%d revoked%s; reread on change)%s",
            self.opts.crl,
            self.facts.revoked,
            f", next update {self.facts.next_update:%Y-%m-%d}" if self.facts.next_update else "",
            ", the CRL next to the CA: --no-crl turns this off" if self.opts.crl_is_default else "",
        )
        self._warn_expiry()

    def start(self) -> None:
        """Poll the CRL file in a background thread (nothing to do without a CRL)."""
        if self.opts.crl is None:
            return
        self._thread = threading.Thread(target=self._run, name="tdwii-crl", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reload(self, why: str) -> bool:
        """Build and install a fresh context (certificate, key, CA and CRL reread); on a
        problem keep the running one and log why. True when the new one is in use."""
        with self._lock:
            self._seen = _identity(self.opts.crl) if self.opts.crl else None
            try:
                facts = crl_facts(self.opts) if self.opts.crl else None
                ctx = self.build(self.opts)
            except TdwiiError as exc:
                log.error("%s: TLS set-up not reloaded, the previous one stays: %s", why, exc)
                self._tell(why, False, exc.message)
                return False
            self.install(ctx)
            self.facts = facts
            self._warned = None
        if facts is not None:
            log.info(
                "%s: CRL %s reloaded: %d revoked%s",
                why,
                facts.path,
                facts.revoked,
                f", next update {facts.next_update:%Y-%m-%d %H:%M} UTC"
                if facts.next_update
                else "",
            )
        else:
            log.info("%s: TLS certificate, key and CA reloaded", why)
        self._tell(
            why,
            True,
            f"CRL {facts.path}: {facts.revoked} revoked" if facts is not None else "no CRL",
        )
        self._warn_expiry()
        return True

    def _tell(self, why: str, ok: bool, detail: str) -> None:
        if self.reloaded is None:
            return
        try:
            self.reloaded(why, ok, detail)
        except Exception as exc:  # the reload is done; telling about it must not undo that
            log.warning("after the TLS reload: %s", exc)

    def _run(self) -> None:
        assert self.opts.crl is not None
        missing_logged = False
        while not self._stop.wait(self.interval):
            now_seen = _identity(self.opts.crl)
            if now_seen is None:
                if not missing_logged:
                    log.error("CRL %s is gone: the one read before stays in use", self.opts.crl)
                missing_logged = True
                continue
            missing_logged = False
            if now_seen != self._seen:
                self.reload("CRL file changed")
            else:
                self._warn_expiry()

    def _warn_expiry(self) -> None:
        if self.facts is None:
            return
        now = utc_now()
        level, line = expiry_line(self.facts, now)
        if not level:
            return
        if self._warned and self._warned[0] == level and now - self._warned[1] < _WARN_EVERY:
            return
        self._warned = (level, now)
        log.log(level, "%s", line)
