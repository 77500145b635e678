"""The peer a client command talks to (host, port, TLS, association options), and an
association with it that proposes the contexts an operation needs."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from tdwii_cli.net.options import ScuOptions

if TYPE_CHECKING:
    from tdwii_cli.net.association import Association
    from tdwii_cli.net.pdu import PresentationContext
    from tdwii_cli.tls.options import TlsOptions


@dataclass(frozen=True)
class Peer:
    """Where and how to connect."""

    host: str
    port: int
    tls: TlsOptions
    net: ScuOptions = field(default_factory=ScuOptions)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (None without TLS), made once per peer."""
        if not self.tls.enabled:
            return None
        from tdwii_cli.tls.context import build_client_context

        return build_client_context(self.tls)

    @contextmanager
    def associate(
        self, contexts: Sequence[PresentationContext], required: Sequence[str] | None = None
    ) -> Iterator[Association]:
        """An association proposing `contexts` (each of `required` must be accepted)."""
        from tdwii_cli.net.association import open_association

        with open_association(
            self.host,
            self.port,
            self.ssl_context,
            self.net,
            contexts,
            mutual=self.tls.mutual,
            required=required,
        ) as assoc:
            yield assoc
