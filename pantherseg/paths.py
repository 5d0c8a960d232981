"""Where the defaults live: the config and weights shipped beside the package.

The repository (and the container, which copies the same layout to /opt/app) keeps
``ensemble_config.json`` and ``weights/`` next to the ``pantherseg`` package. Environment variables
override them for installs that put the package elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_config() -> Path:
    return Path(os.environ.get("PANTHERSEG_CONFIG", PROJECT_ROOT / "ensemble_config.json"))


def default_weights() -> Path:
    return Path(os.environ.get("PANTHERSEG_WEIGHTS", PROJECT_ROOT / "weights"))


def has_content(folder: Path) -> bool:
    """True if ``folder`` exists and holds anything (grand-challenge may mount an empty /opt/ml/model)."""
    try:
        return folder.is_dir() and any(folder.iterdir())
    except OSError:
        return False
