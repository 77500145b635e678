"""TLS for DICOM (PS3.15 Annex B): options, contexts per profile, our own certificate, diagnosis."""
