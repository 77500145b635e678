"""tdwii: the DICOM UPS worklist of IHE-RO TDW-II over mutually authenticated TLS."""

__version__ = "0.1.0"
