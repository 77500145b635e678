"""The UPS rules without I/O: state machine, N-CREATE checks, C-FIND matching, workitems."""
