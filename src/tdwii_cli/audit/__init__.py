"""The audit trail (IHE ATNA, DICOM PS3.15 A.5-A.7): messages, syslog framing, spool, senders."""
