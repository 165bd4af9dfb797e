"""Exports of a fitted ensemble for scoring services; every format reads ``scoring.ScoringSpec``."""
