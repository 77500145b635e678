"""The DICOM upper layer on plain sockets: PDUs, DIMSE messages, associations, the log."""
