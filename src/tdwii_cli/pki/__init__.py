"""The PKI for DICOM TLS nodes: keys, certificates, Java stores, CRL, the folder layout."""
