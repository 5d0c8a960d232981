"""What plans.json and dataset.json may hold: every field the engine or nnU-Net's code reads, declared.

A model tarball is untrusted, and nnU-Net reads many more fields than a hand-written check would
think of (its plans and configuration managers, the preprocessor, the normalisation schemes, the
resampling functions and their keyword arguments, the label manager, the network builder). So the
fields are declared here as data: :data:`PLANS`, :data:`CONFIGURATION` (the member's configuration,
after ``inherits_from`` is resolved), the ``arch_kwargs`` of each allowed architecture
(:data:`ARCH_KWARGS`), the keyword arguments of each allowed resampling function
(:data:`RESAMPLING_KWARGS`) and :data:`DATASET`; plus a few rules between fields
(:data:`CONFIGURATION_RULES`, :data:`DATASET_RULES`). :func:`validate_plans` and
:func:`validate_dataset` check a decoded file against them before any class is named or any image
read; the first violation is a :class:`SchemaViolation` naming the key path, what was expected and
what was found (``members`` turns it into a ModelError, exit 3, with the file name).

Objects are open (keys nobody reads are ignored: planners add their own) except where the keys are
passed on as keyword arguments (``arch_kwargs``, resampling kwargs, layer kwargs): there every key
is read, so every key must be declared. ``tests/engine/test_model_schema.py`` records every key the
engine and nnU-Net read while loading and building the zoo's and the organisers' members and fails
if one is not declared here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from pantherseg.errors import short_repr

# A plans.json holds five or so configurations; nnU-Net resolves inheritance recursively.
MAX_INHERITANCE = 8
# ResEnc-L has 102 M parameters (CONTEXT.md); 20x that is not a segmentation network of this kind.
MAX_PARAMETERS = 2_000_000_000
MAX_STAGES = 16
MAX_CONVS_PER_STAGE = 64
MAX_FEATURES = 4096
MAX_LABELS = 64


class SchemaViolation(ValueError):
    """``path`` (e.g. ``configurations.3d_fullres.spacing[1]``) must be ``expected``; ``found`` is shown.

    ``label`` is what the nearest labelled key means to a user ("the target spacing")."""

    def __init__(self, path: str, expected: str, found: object, label: str = ""):
        self.path, self.expected, self.found, self.label = path, expected, found, label

    def __str__(self) -> str:
        what = f"{self.label} " if self.label else ""
        return f"{what}'{self.path}' must be {self.expected}, found {short_repr(self.found)}"


# --- the spec vocabulary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int:
    low: int
    high: int

    def check(self, value, path, parent):
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise SchemaViolation(path, f"an integer in [{self.low}, {self.high}]", value)


@dataclass(frozen=True)
class Number:
    """A finite JSON number with ``low < value`` (``low_open``) or ``low <= value``, and ``value <= high``."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False

    def check(self, value, path, parent):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > self.low if self.low_open else value >= self.low) and value <= self.high
        if not ok:
            bracket = "(" if self.low_open else "["
            raise SchemaViolation(path, f"a finite number in {bracket}{self.low}, {self.high}]", value)


@dataclass(frozen=True)
class Bool:
    def check(self, value, path, parent):
        if not isinstance(value, bool):
            raise SchemaViolation(path, "true or false", value)


@dataclass(frozen=True)
class Null:
    def check(self, value, path, parent):
        if value is not None:
            raise SchemaViolation(path, "null", value)


@dataclass(frozen=True)
class Str:
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int = 256

    def check(self, value, path, parent):
        if self.choices is not None:
            if value not in self.choices or not isinstance(value, str):
                raise SchemaViolation(path, f"one of {list(self.choices)}", value)
        elif (
            not isinstance(value, str)
            or len(value) > self.max_length
            or (self.pattern and not re.fullmatch(self.pattern, value))
        ):
            rule = f"matching {self.pattern}" if self.pattern else f"of at most {self.max_length} characters"
            raise SchemaViolation(path, f"a string {rule}", value)


@dataclass(frozen=True)
class AnyOf:
    options: tuple

    def check(self, value, path, parent):
        errors = []
        for option in self.options:
            try:
                option.check(value, path, parent)
                return
            except SchemaViolation as error:
                errors.append(error)
        if len({e.path for e in errors}) > 1:  # one option got further: its message is the useful one
            raise max(errors, key=lambda e: len(e.path))
        raise SchemaViolation(path, " or ".join(e.expected for e in errors), value)


@dataclass(frozen=True)
class Sibling:
    """A length taken from an integer sibling key of the same object, plus ``offset``."""

    key: str
    offset: int = 0


@dataclass(frozen=True)
class List:
    item: object
    length: int | tuple[int, int] | Sibling = (0, 1024)

    def check(self, value, path, parent):
        low, high = self._bounds(parent)
        if not isinstance(value, (list, tuple)) or not low <= len(value) <= high:
            count = f"{low}" if low == high else f"{low} to {high}"
            raise SchemaViolation(path, f"a list of {count} values", value)
        for index, item in enumerate(value):
            self.item.check(item, f"{path}[{index}]", parent)

    def _bounds(self, parent) -> tuple[int, int]:
        if isinstance(self.length, int):
            return self.length, self.length
        if isinstance(self.length, Sibling):
            n = parent.get(self.length.key) if isinstance(parent, dict) else None
            n = n + self.length.offset if isinstance(n, int) and not isinstance(n, bool) else -1
            return n, n
        return self.length


@dataclass(frozen=True)
class Key:
    spec: object
    required: bool = True
    label: str = ""  # what the key means, for messages


@dataclass(frozen=True)
class Obj:
    """A JSON object; ``closed`` refuses undeclared keys (where every key is passed on as an argument)."""

    keys: dict = field(default_factory=dict)
    closed: bool = False

    def check(self, value, path, parent):
        if not isinstance(value, dict):
            raise SchemaViolation(path, "a JSON object", value)
        for name, key in self.keys.items():
            try:
                if name in value:
                    key.spec.check(value[name], _join(path, name), value)
                elif key.required:
                    raise SchemaViolation(_join(path, name), f"present ({_describe(key.spec)})", "nothing")
            except SchemaViolation as violation:
                violation.label = violation.label or key.label
                raise
        if self.closed:
            unknown = sorted(set(value) - set(self.keys))
            if unknown:
                raise SchemaViolation(
                    _join(path, unknown[0]), f"absent: allowed keys are {sorted(self.keys)}", value[unknown[0]]
                )


@dataclass(frozen=True)
class Map:
    """An object of free keys (matching ``key``) with values of one spec, ``size`` entries."""

    value: object
    key: str = r"[A-Za-z0-9_.\- ]{1,128}"
    size: tuple[int, int] = (0, 1024)

    def check(self, value, path, parent):
        if not isinstance(value, dict) or not self.size[0] <= len(value) <= self.size[1]:
            raise SchemaViolation(path, f"a JSON object of {self.size[0]} to {self.size[1]} entries", value)
        for name, item in value.items():
            if not re.fullmatch(self.key, name):
                raise SchemaViolation(_join(path, name), f"a key matching {self.key}", name)
            self.value.check(item, _join(path, name), value)


@dataclass(frozen=True)
class PerName:
    """An object whose schema depends on a sibling that names a function or class (its kwargs).

    ``selector`` is the sibling key; the last dotted part of its value picks the schema in ``table``."""

    table: dict
    selector: str

    def check(self, value, path, parent):
        name = str(parent.get(self.selector)).rpartition(".")[2]
        if name not in self.table:
            raise SchemaViolation(
                _join(path.rpartition(".")[0], self.selector), f"one of {sorted(self.table)}", parent.get(self.selector)
            )
        self.table[name].check(value, path, parent)


@dataclass(frozen=True)
class Anything:
    """Declared because something reads it, but nothing is computed from it (names shown in logs)."""

    def check(self, value, path, parent):
        pass


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(spec) -> str:
    return type(spec).__name__.lower()


# --- the declarations ----------------------------------------------------------------------------------

AXIS = Int(0, 2)
FINITE = Number()
LAYER = AnyOf((Null(), Str(pattern=r"torch\.nn(\.[A-Za-z_][A-Za-z0-9_]*)+")))
# kwargs of a torch.nn layer (eps, affine, inplace, negative_slope, p): scalars only.
LAYER_KWARGS = AnyOf((Null(), Map(AnyOf((Bool(), FINITE, Null())), key=r"[a-z_][a-z0-9_]{0,63}", size=(0, 16))))
PER_STAGE_3D = List(List(Int(1, 16), 3), Sibling("n_stages"))


def _per_stage(item, offset: int = 0):
    return AnyOf((item, List(item, Sibling("n_stages", offset))))


_COMMON_ARCH = {
    "n_stages": Key(Int(1, MAX_STAGES)),
    "features_per_stage": Key(AnyOf((Int(1, MAX_FEATURES), List(Int(1, MAX_FEATURES), Sibling("n_stages"))))),
    "conv_op": Key(Str(choices=("torch.nn.modules.conv.Conv3d", "torch.nn.Conv3d"))),
    "kernel_sizes": Key(List(List(Int(1, 15), 3), Sibling("n_stages"))),
    "strides": Key(List(List(Int(1, 16), 3), Sibling("n_stages"))),
    "n_conv_per_stage_decoder": Key(_per_stage(Int(1, MAX_CONVS_PER_STAGE), -1)),
    "conv_bias": Key(Bool(), required=False),
    "norm_op": Key(LAYER, required=False),
    "norm_op_kwargs": Key(LAYER_KWARGS, required=False),
    "dropout_op": Key(LAYER, required=False),
    "dropout_op_kwargs": Key(LAYER_KWARGS, required=False),
    "nonlin": Key(LAYER, required=False),
    "nonlin_kwargs": Key(LAYER_KWARGS, required=False),
}
_RESIDUAL_ARCH = {
    **_COMMON_ARCH,
    "n_blocks_per_stage": Key(_per_stage(Int(1, MAX_CONVS_PER_STAGE))),
    "bottleneck_channels": Key(AnyOf((Null(), _per_stage(Int(1, MAX_FEATURES)))), required=False),
    "stem_channels": Key(AnyOf((Null(), Int(1, MAX_FEATURES))), required=False),
}
# Closed: every key is passed to the network's constructor.
ARCH_KWARGS = {
    "PlainConvUNet": Obj(
        {
            **_COMMON_ARCH,
            "n_conv_per_stage": Key(_per_stage(Int(1, MAX_CONVS_PER_STAGE))),
            "nonlin_first": Key(Bool(), required=False),
        },
        closed=True,
    ),
    "ResidualEncoderUNet": Obj(_RESIDUAL_ARCH, closed=True),
    "ResidualUNet": Obj(_RESIDUAL_ARCH, closed=True),
}

_SEPARATE_Z = {
    "is_seg": Key(Bool(), required=False),
    "force_separate_z": Key(AnyOf((Null(), Bool())), required=False),
    "separate_z_anisotropy_threshold": Key(Number(0, 1000, low_open=True), required=False),
}
# Closed: the kwargs are bound to the function with functools.partial.
RESAMPLING_KWARGS = {
    "resample_data_or_seg_to_shape": Obj(
        {**_SEPARATE_Z, "order": Key(Int(0, 5), required=False), "order_z": Key(Int(0, 5), required=False)}, closed=True
    ),
    "resample_torch_fornnunet": Obj(
        {
            **_SEPARATE_Z,
            "memefficient_seg_resampling": Key(Bool(), required=False),
            "num_threads": Key(Int(1, 256), required=False),
        },
        closed=True,
    ),
}
NORMALIZATION_SCHEMES = (
    "ZScoreNormalization",
    "CTNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
    "RGBTo01Normalization",
)
# Scale-invariant schemes: the preprocessing may scale an image by a power of two before them (exactly).
SCALE_INVARIANT_SCHEMES = ("ZScoreNormalization", "RescaleTo01Normalization")
_RESAMPLING_FN = Str(choices=tuple(RESAMPLING_KWARGS))

CONFIGURATION = Obj(
    {
        "inherits_from": Key(Str(max_length=128), required=False),  # resolved before this schema applies
        "preprocessor_name": Key(Str(choices=("DefaultPreprocessor",))),
        "patch_size": Key(List(Int(1, 4096), 3), label="the 3D patch_size (only 3D configurations are supported)"),
        "spacing": Key(List(Number(0, 1e4, low_open=True), 3), label="the target spacing in millimetres"),
        "normalization_schemes": Key(List(Str(choices=NORMALIZATION_SCHEMES), 1)),
        "use_mask_for_norm": Key(List(Bool(), 1)),
        "resampling_fn_data": Key(_RESAMPLING_FN),
        "resampling_fn_data_kwargs": Key(PerName(RESAMPLING_KWARGS, "resampling_fn_data")),
        "resampling_fn_seg": Key(_RESAMPLING_FN),
        "resampling_fn_seg_kwargs": Key(PerName(RESAMPLING_KWARGS, "resampling_fn_seg")),
        "resampling_fn_probabilities": Key(_RESAMPLING_FN),
        "resampling_fn_probabilities_kwargs": Key(PerName(RESAMPLING_KWARGS, "resampling_fn_probabilities")),
        "architecture": Key(
            Obj(
                {
                    "network_class_name": Key(Str(max_length=256)),  # allow-listed by engine.architectures
                    "arch_kwargs": Key(PerName(ARCH_KWARGS, "network_class_name")),
                    "_kw_requires_import": Key(
                        List(Str(choices=("conv_op", "norm_op", "dropout_op", "nonlin")), (0, 4))
                    ),
                }
            )
        ),
        "previous_stage": Key(Null(), required=False),  # cascades are not supported
        "next_stage": Key(Anything(), required=False),
    }
)

INTENSITY_PROPERTIES = Obj(
    {
        name: Key(FINITE, required=False)
        for name in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")
    }
)
PLANS = Obj(
    {
        "configurations": Key(Map(Obj(), size=(1, 64))),
        "transpose_forward": Key(List(AXIS, 3)),
        "transpose_backward": Key(List(AXIS, 3)),
        "foreground_intensity_properties_per_channel": Key(
            Map(INTENSITY_PROPERTIES, key=r"[0-9]{1,3}", size=(1, 1)),
            label="the intensity properties (normalisation statistics)",
        ),
        "label_manager": Key(Str(choices=("LabelManager",)), required=False),
        "dataset_name": Key(Str(), required=False),
        "plans_name": Key(Str(), required=False),
    }
)

DATASET = Obj(
    {
        "labels": Key(Map(Int(0, 255), size=(2, MAX_LABELS)), label="the label map"),
        "regions_class_order": Key(Null(), required=False),  # region-based models are not supported
        "channel_names": Key(Map(Str(max_length=128), key=r"[0-9]{1,3}", size=(1, 1)), required=False),
        "modality": Key(Map(Str(max_length=128), key=r"[0-9]{1,3}", size=(1, 1)), required=False),
        "file_ending": Key(Str(max_length=32), required=False),
        "numTraining": Key(Int(0, 10**9), required=False),
    }
)


# --- rules between fields ------------------------------------------------------------------------------


def _transpose_is_permutation(plans: dict) -> None:
    for key in ("transpose_forward", "transpose_backward"):
        if sorted(plans[key]) != [0, 1, 2]:
            raise SchemaViolation(key, "a permutation of [0, 1, 2]", plans[key])
    forward, backward = plans["transpose_forward"], plans["transpose_backward"]
    if [forward[axis] for axis in backward] != [0, 1, 2]:
        raise SchemaViolation("transpose_backward", f"the inverse of transpose_forward {forward}", backward)


def _arch_kwargs(configuration: dict, path: str) -> None:
    architecture = configuration["architecture"]
    where = _join(path, "architecture.arch_kwargs")
    kwargs = architecture["arch_kwargs"]
    for key in architecture["_kw_requires_import"]:
        if key not in kwargs:
            raise SchemaViolation(
                _join(path, "architecture._kw_requires_import"),
                f"a list of arch_kwargs keys (found no '{key}' there)",
                architecture["_kw_requires_import"],
            )
    parameters = estimated_parameters(kwargs)
    if parameters > MAX_PARAMETERS:
        raise SchemaViolation(
            where,
            f"a network of at most {MAX_PARAMETERS:.0e} parameters (estimated from "
            f"features, kernels and convolutions per stage)",
            f"{parameters:.2e}",
        )


def _normalisation_has_its_properties(configuration: dict, path: str, plans: dict) -> None:
    properties = plans["foreground_intensity_properties_per_channel"]
    for channel, scheme in enumerate(configuration["normalization_schemes"]):
        where = f"foreground_intensity_properties_per_channel.{channel}"
        if str(channel) not in properties:
            raise SchemaViolation(where, f"present (channel {channel} is normalised)", "nothing")
        if scheme == "CTNormalization":
            values = properties[str(channel)]
            for name in ("mean", "std", "percentile_00_5", "percentile_99_5"):
                if name not in values:
                    raise SchemaViolation(
                        _join(where, name), "present: CTNormalization clips and scales by it", "nothing"
                    )
            if values["percentile_00_5"] > values["percentile_99_5"]:
                raise SchemaViolation(
                    _join(where, "percentile_00_5"), "at most percentile_99_5", values["percentile_00_5"]
                )


CONFIGURATION_RULES = (_arch_kwargs,)


def _labels_are_consecutive(dataset: dict) -> None:
    labels = dataset["labels"]
    values = sorted(labels.values())
    if labels.get("background") != 0:
        raise SchemaViolation("labels.background", "0 (nnU-Net's background)", labels.get("background", "nothing"))
    if values != list(range(len(values))):
        raise SchemaViolation(
            "labels",
            "consecutive integers 0..n-1, one per output channel, as nnU-Net requires (the channel index is the label)",
            dict(labels),
        )


def _one_channel(dataset: dict) -> None:
    if "channel_names" not in dataset and "modality" not in dataset:
        raise SchemaViolation("channel_names", "present (one input channel: the MRI)", "nothing")


DATASET_RULES = (_labels_are_consecutive, _one_channel)


# --- the validators ------------------------------------------------------------------------------------


def validate_plans(plans: object, configuration_name: str) -> dict:
    """Check ``plans`` and return the member's configuration with ``inherits_from`` resolved.

    Raises SchemaViolation naming the first key that breaks the schema."""
    PLANS.check(plans, "", None)
    _transpose_is_permutation(plans)
    configuration = resolve_configuration(plans, configuration_name)
    path = f"configurations.{configuration_name}"
    CONFIGURATION.check(configuration, path, plans)
    for rule in CONFIGURATION_RULES:
        rule(configuration, path)
    _normalisation_has_its_properties(configuration, path, plans)
    return configuration


def validate_dataset(dataset: object) -> None:
    DATASET.check(dataset, "", None)
    for rule in DATASET_RULES:
        rule(dataset)


def resolve_configuration(plans: dict, name: str) -> dict:
    """nnU-Net's inheritance (a child's keys over its parent's), bounded and loop-free."""
    configurations = plans["configurations"]
    chain = [name]
    while True:
        current = configurations.get(chain[-1])
        if not isinstance(current, dict):
            where = "configurations" if len(chain) == 1 else f"configurations.{chain[-2]}.inherits_from"
            raise SchemaViolation(where, f"naming one of {sorted(configurations)}", chain[-1])
        parent = current.get("inherits_from")
        if parent is None:
            break
        if not isinstance(parent, str) or parent in chain or len(chain) > MAX_INHERITANCE:
            raise SchemaViolation(
                f"configurations.{chain[-1]}.inherits_from",
                f"a configuration name ending a chain of at most {MAX_INHERITANCE} without loops "
                f"(chain so far: {chain})",
                parent,
            )
        chain.append(parent)
    resolved: dict = {}
    for link in reversed(chain):
        resolved.update(configurations[link])
    return resolved


def declared(path: str, schema=None) -> bool:
    """Whether the key path (``configurations.3d_fullres.architecture.arch_kwargs.n_stages``; a ``*`` part
    for any key) is declared: what the schema test asks of every key the engine and nnU-Net read."""
    schema = PLANS if schema is None else schema
    parts = path.split(".") if path else []
    if not parts:
        return True
    if schema is PLANS and parts[0] == "configurations" and len(parts) > 1:
        return declared(".".join(parts[2:]), CONFIGURATION)
    for spec in _options(schema):
        if isinstance(spec, Obj) and parts[0] in spec.keys:
            if declared(".".join(parts[1:]), spec.keys[parts[0]].spec):
                return True
        elif isinstance(spec, Map) and declared(".".join(parts[1:]), spec.value):
            return True
        elif isinstance(spec, PerName) and any(declared(path, option) for option in spec.table.values()):
            return True
    return False


def _options(spec) -> tuple:
    return tuple(o for option in spec.options for o in _options(option)) if isinstance(spec, AnyOf) else (spec,)


def estimated_parameters(kwargs: dict) -> int:
    """Weights of the encoder's and decoder's convolutions (about all of a U-Net's), from arch_kwargs alone."""
    stages = kwargs["n_stages"]
    features = _per_stage_values(kwargs["features_per_stage"], stages)
    encoder = _per_stage_values(kwargs.get("n_conv_per_stage", kwargs.get("n_blocks_per_stage", 1)), stages)
    decoder = _per_stage_values(kwargs["n_conv_per_stage_decoder"], stages - 1) + [0]
    total = 0
    for stage in range(stages):
        kernel = math.prod(kwargs["kernel_sizes"][stage])
        convs = encoder[stage] * 2 + decoder[stage] + 1  # residual blocks hold two convolutions
        total += convs * kernel * features[stage] * features[stage]
    return total


def _per_stage_values(value, stages: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * stages
