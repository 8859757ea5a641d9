"""vizsuite: feature visualization, attribution and galleries for PyTorch vision models."""

import os as _os

# Offline, for real: hub libraries read this when they are first imported, which is after this
# line in the CLI. The loaders also pass local files explicitly (zoo.sources), so nothing
# depends on it.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
