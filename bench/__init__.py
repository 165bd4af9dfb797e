"""clusterforget benchmark suite (issue 4). Run ``python -m bench`` (full) or ``python -m bench --quick``."""
