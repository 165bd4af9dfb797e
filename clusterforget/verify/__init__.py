"""Verify that forgetting worked: the forgotten rows are gone, and the model is what a fresh fit gives."""

from .api import VerifyResult, fresh_fit, verify

__all__ = ["verify", "fresh_fit", "VerifyResult"]
