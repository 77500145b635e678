"""The worklist manager's acceptor: `tdwii_cli.scp.acceptor.Acceptor` set up from a
`ServeConfig` (its AE title, limits and timeouts), serving Verification and the five UPS
SOP Classes with the UPS SCP (`dispatch`)."""

from __future__ import annotations

import functools
import ssl

from tdwii_cli.dicom.uids import UPS_SOP_CLASSES, VERIFICATION
from tdwii_cli.scp.acceptor import Acceptor, AcceptorSettings
from tdwii_cli.scp.limits import LimitSettings
from tdwii_cli.scp.session import SessionSettings
from tdwii_cli.server import dispatch
from tdwii_cli.server.config import ServeConfig
from tdwii_cli.server.ups_scp import UpsScp

ABSTRACT_SYNTAXES = (VERIFICATION, *UPS_SOP_CLASSES)


def acceptor_settings(config: ServeConfig) -> AcceptorSettings:
    """What `tdwii serve` accepts, and its limits and timeouts, from its configuration."""
    return AcceptorSettings(
        ae_title=config.ae_title,
        abstract_syntaxes=ABSTRACT_SYNTAXES,
        max_pdu=config.max_pdu,
        require_called=config.require_called_aet,
        handshake_timeout=config.handshake_timeout,
        limits=LimitSettings(
            max_pending=config.max_pending,
            max_pending_per_host=config.max_pending_per_host,
            max_associations=config.max_associations,
            max_associations_per_host=config.effective_max_associations_per_host,
        ),
        session=SessionSettings(
            acse_timeout=config.acse_timeout,
            dimse_timeout=config.dimse_timeout,
            network_timeout=config.network_timeout,
            # with no maximum announced (0), a PDU still cannot be longer than a message
            max_pdu=config.max_pdu or config.max_message_size + (1 << 16),
            max_message=config.max_message_size,
        ),
    )


def ups_acceptor(config: ServeConfig, scp: UpsScp, ssl_context: ssl.SSLContext | None) -> Acceptor:
    """The acceptor of `tdwii serve`: every request goes to `scp`, every association and
    refused connection past its authorizer."""
    return Acceptor(
        acceptor_settings(config),
        functools.partial(dispatch.replies, scp),
        ssl_context,
        gate=scp.guard,
    )
