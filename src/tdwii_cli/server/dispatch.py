"""From a DIMSE request to the UPS SCP and back: which `UpsScp` method serves each command,
and the response command set (and data set) for each `Reply`.

`replies(scp, request)` yields the `Reply`s for a `Request` (one, or C-FIND's
pending ones then the final one); `response(request, reply)` is the response
`Command` and its data set bytes, encoded in the request's transfer syntax.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from tdwii_cli.dicom import status as st
from tdwii_cli.dicom.values import valid_uid
from tdwii_cli.net import dimse
from tdwii_cli.scp.messages import Reply, Request
from tdwii_cli.server.ups_scp import UpsScp

log = logging.getLogger("tdwii.serve")

# requests that name an existing instance (Requested SOP Instance UID)
_NAMES_INSTANCE = (dimse.N_GET_RQ, dimse.N_SET_RQ, dimse.N_ACTION_RQ)


def _one(method: Callable[[Request], Reply]) -> Callable[[Request], Iterator[Reply]]:
    def serve(request: Request) -> Iterator[Reply]:
        yield method(request)

    return serve


def replies(scp: UpsScp, request: Request) -> Iterator[Reply]:
    """The replies of `scp` to `request`; an operation we do not serve is 0211, and one
    that fails unexpectedly (a data set pydicom cannot read, a bug) 0110 or C000."""
    try:
        yield from _replies(scp, request)
    except Exception as exc:
        name = request.command.name
        log.warning(
            "%s from %s failed: %s: %s",
            name,
            request.calling_ae,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        log.debug("%s failure detail", name, exc_info=True)
        failed = (
            st.UNABLE_TO_PROCESS
            if request.command.field == dimse.C_FIND_RQ
            else (st.PROCESSING_FAILURE)
        )
        yield Reply(failed, "the request could not be processed")


def _replies(scp: UpsScp, request: Request) -> Iterator[Reply]:
    command = request.command
    field = command.field
    if field in _NAMES_INSTANCE and not valid_uid(request.sop_instance):
        # a malformed, over-long or multi-valued UID names no UPS
        yield Reply(st.UPS_NO_SUCH_UPS, "the Requested SOP Instance UID is not a valid UID")
        return
    if field == dimse.N_CREATE_RQ and request.sop_instance and not valid_uid(request.sop_instance):
        yield Reply(st.INVALID_ATTRIBUTE_VALUE, "the Affected SOP Instance UID is not a valid UID")
        return
    serve = {
        dimse.C_ECHO_RQ: _one(scp.echo),
        dimse.N_CREATE_RQ: _one(scp.create),
        dimse.C_FIND_RQ: scp.find,
        dimse.N_GET_RQ: _one(scp.get),
        dimse.N_SET_RQ: _one(scp.set),
        dimse.N_ACTION_RQ: _one(scp.action),
    }.get(field)
    if serve is None:
        yield Reply(st.UNRECOGNIZED_OPERATION, f"{command.name} is not served here")
        return
    yield from serve(request)
