"""The DICOM vocabulary tdwii speaks: UIDs, status codes, tags, value rules, data set codec."""
