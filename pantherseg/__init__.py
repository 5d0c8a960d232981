"""pantherseg: the PANTHER pancreatic-tumour ensemble (nnU-Net v2 members, softmax averaging).

Heavy dependencies (torch, nnU-Net) are imported lazily so that ``pantherseg --help`` answers at once.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "segment", "Ensemble", "PantherError"]


def __getattr__(name):
    if name in ("segment", "Ensemble"):
        from pantherseg import api

        return getattr(api, name)
    if name == "PantherError":
        from pantherseg.errors import PantherError

        return PantherError
    raise AttributeError(f"module 'pantherseg' has no attribute {name!r}")
