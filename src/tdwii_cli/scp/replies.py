"""The response to a request: a `Reply` as the response command set and its data set bytes,
and the reply to a request whose data set was over the message size limit.

A response says "data set present" (Command Data Set Type other than 0x0101) only when it
carries one with content: an empty data set is no data set. Foreign toolkits read a flagged
empty data set as one of "0 elements" (pynetdicom) or fail on it. Only a C-FIND pending
response keeps an empty identifier (the answer to a query without keys): PS3.7 requires the
Identifier in every pending response."""

from __future__ import annotations

from tdwii_cli.dicom import codec
from tdwii_cli.dicom import status as st
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE
from tdwii_cli.net import dimse
from tdwii_cli.net.dimse import Command
from tdwii_cli.scp.messages import Reply, Request


def too_large(command: Command) -> Reply:
    """The reply to a request whose data set was over the message size limit."""
    if command.field == dimse.C_FIND_RQ:
        return Reply(st.OUT_OF_RESOURCES, "the identifier is too large")
    return Reply(st.RESOURCE_LIMITATION, "the data set is over this server's message size limit")


def response(request: Request, reply: Reply) -> tuple[Command, bytes | None]:
    """The response command set for `reply` and its data set (encoded), if any: none when
    the data set is empty, except in a C-FIND pending response."""
    data = None
    if reply.data is not None:
        data = codec.transcode(reply.data, EXPLICIT_VR_LE, request.transfer_syntax)
    elif reply.dataset is not None:
        data = codec.encode(reply.dataset, request.transfer_syntax)
    if not data and not (request.command.field == dimse.C_FIND_RQ and st.is_pending(reply.status)):
        data = None
    fields: dict[str, object] = {"has_dataset": data is not None}
    if reply.comment and reply.status != st.SUCCESS:
        fields["error_comment"] = reply.comment[: dimse.MAX_ERROR_COMMENT]
    if reply.sop_instance:
        fields["sop_instance"] = reply.sop_instance
    if request.command.field == dimse.N_EVENT_REPORT_RQ:
        fields["event_type"] = request.command.event_type
    return request.command.response(reply.status, **fields), data
