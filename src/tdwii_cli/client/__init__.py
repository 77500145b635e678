"""What the client commands do, callable from Python: C-ECHO, creating workitems, DICOM files."""
