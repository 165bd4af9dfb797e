"""Verify that forgetting worked, and prove it: checks (held, purge, exact, mia, diff) and signed certificates.

Importing this package plugs ``diff.audit_forget`` into ``forget_rows(..., audit=True)`` (the estimators
never import this layer).
"""

from .. import estimators as _estimators
from .api import CHECKS, DEFAULT_CHECKS, fresh_fit, verify, verify_store
from .certificate import certificate, certificate_for, verify_certificate
from .diff import audit_forget
from .result import Check, VerifyResult

_estimators.register_hook("audit", audit_forget)

__all__ = ["verify", "verify_store", "fresh_fit", "VerifyResult", "Check", "CHECKS", "DEFAULT_CHECKS", "certificate",
           "certificate_for", "verify_certificate"]
