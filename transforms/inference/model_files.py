"""Where model files are: inside installed packages, or in the local model cache."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

CACHE_ENV = "IMAGINEM_MODEL_CACHE"


def model_cache_dir() -> Path:
    """Where models converted on first use are kept (`$IMAGINEM_MODEL_CACHE`)."""
    configured = os.environ.get(CACHE_ENV)
    base = Path(configured) if configured else Path.home() / ".cache" / "imaginem" / "models"
    base.mkdir(parents=True, exist_ok=True)
    return base


def packaged_file(package: str, distribution: str, *parts: str) -> str:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{distribution} is not installed")
    return os.path.join(spec.submodule_search_locations[0], *parts)
