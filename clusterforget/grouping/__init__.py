"""How training rows are partitioned into groups: by key columns, by learned clusters, or by hash shards.

``base`` says what a grouping is and keeps the registry of kinds; every other module of this package is one
grouping kind and registers itself (a ``Grouping`` subclass with a ``kind``). Adding a grouping is adding its
module here (and its tests, and its row in ``tests/test_contract.py``'s matrix).
"""

from importlib import import_module as _import_module
from pkgutil import iter_modules as _iter_modules

from .auto import AUTO_MAX_K, AUTO_MIN_MINORITY_ROWS, AUTO_MIN_SHARD_ROWS, AutoGroups
from .base import (
    GROUPINGS,
    MAX_HASH,
    Grouping,
    Key,
    grouping_from_dict,
    key_label,
    key_sort,
    normalize_value,
    resolve_grouping,
    sample_threshold,
)
from .hash import HashGroups
from .key import KeyGroups
from .kmeans import ClusterState, KMeansGroups

for _info in _iter_modules(__path__):  # every grouping module registers its kind on import
    if _info.name != "base":
        _import_module(f"{__name__}.{_info.name}")

__all__ = ["Grouping", "KeyGroups", "HashGroups", "KMeansGroups", "AutoGroups", "ClusterState", "resolve_grouping",
           "grouping_from_dict", "GROUPINGS", "Key", "key_label", "key_sort", "normalize_value", "sample_threshold",
           "MAX_HASH", "AUTO_MAX_K", "AUTO_MIN_MINORITY_ROWS", "AUTO_MIN_SHARD_ROWS"]
