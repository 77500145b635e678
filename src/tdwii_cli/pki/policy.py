"""The PKI's policy: key strengths, signature hashes and validity periods tdwii issues and accepts.

No cryptography import here: the quick own-certificate check of a one-shot client reads it too.
"""

from __future__ import annotations

import datetime as dt

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
WEAK_HASHES = ("md5", "sha1", "sha224")  # signature hashes refused (SHA-256 or better)
LEAF_DAYS = 398
CA_DAYS = 3650
CRL_DAYS = 30
BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between nodes
EXPIRY_WARNING_DAYS = 30  # warn when a certificate has fewer days left
CRL_WARNING_DAYS = 7  # warn when the CRL a server checks against has fewer days left
