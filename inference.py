#!/usr/bin/env python
"""grand-challenge.org entry point of the PANTHER tumour-segmentation container.

On the platform it runs with no arguments: one job, /input -> exactly one mask in /output (see
pantherseg/container/entry_point.py, where the logic lives and is tested). Locally the same layout
can live anywhere:
    python inference.py --input test/samples/t1-phantom/input --output output/
This file only wires: it makes the package importable from a checkout or /opt/app and calls it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # runnable from a checkout or /opt/app without installing the package

from pantherseg.container.entry_point import run  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run())
