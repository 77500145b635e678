"""Process exit codes shared by every subcommand (DCMTK-style 60-79 for the network)."""

from __future__ import annotations

OK = 0
ERROR = 1  # bad input, configuration or local file problem
USAGE = 2  # click's usage errors
PARTIAL = 3  # some items of a batch failed, the rest succeeded
UNREACHABLE = 60  # peer unreachable: refused, no route, connect timeout
ASSOC_REJECTED = 61  # A-ASSOCIATE-RJ, or no acceptable presentation context
ASSOC_ABORTED = 62  # A-ABORT, connection lost or DIMSE/network timeout mid-association
TLS_HANDSHAKE = 63  # the TLS handshake failed (certificate, protocol, cipher, ...)
DIMSE_FAILURE = 64  # the peer answered with a failure status
INTERRUPTED = 130  # Ctrl-C (after cancelling what was under way)

HELP = """Exit codes: 0 success; 1 bad input or configuration; 2 usage;
3 some items failed; 60 peer unreachable; 61 association rejected;
62 association aborted or timed out; 63 TLS handshake failed;
64 DIMSE failure status; 130 interrupted (Ctrl-C)."""
