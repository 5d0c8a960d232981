"""pantherseg: the PANTHER pancreatic-tumour ensemble (nnU-Net v2 members, softmax averaging).

The public names are re-exported here, flat, so that ``pantherseg.segment`` and friends do not
depend on where they live in the tree (``api``, ``config``, ``errors``, ``engine/``, ``io/``,
``evaluation/``). Heavy dependencies (torch, nnU-Net) are imported lazily, on first use of a name,
so that ``pantherseg --help`` answers at once.
"""

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "segment": "pantherseg.api",
    "segment_case": "pantherseg.api",
    "CaseResult": "pantherseg.api",
    "collect_inputs": "pantherseg.api",
    "RunOptions": "pantherseg.options",
    "Ensemble": "pantherseg.engine.ensemble",
    "Prediction": "pantherseg.engine.ensemble",
    "EnsembleConfig": "pantherseg.config",
    "load_config": "pantherseg.config",
    "PantherError": "pantherseg.errors",
    "InputError": "pantherseg.errors",
    "ModelError": "pantherseg.errors",
    "ConfigError": "pantherseg.errors",
    "OutputError": "pantherseg.errors",
    "ResourceError": "pantherseg.errors",
    "Volume": "pantherseg.io.images",
    "read_volume": "pantherseg.io.images",
    "evaluate": "pantherseg.evaluation.folders",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once found, a plain attribute
        return value
    raise AttributeError(f"module 'pantherseg' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
