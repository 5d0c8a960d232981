"""Building a member's network from its plans.json without running code the plans name.

nnU-Net's own builder (``get_network_from_plans``) hands the plans' ``network_class_name`` and
every ``_kw_requires_import`` value to ``pydoc.locate``, which imports whatever module is named and
returns whatever it finds: a plans.json from an uploaded model tarball could name
``logging.basicConfig`` (and truncate a file through its arch_kwargs) or import any module. Here:

- the architecture must be one of :data:`ALLOWED_ARCHITECTURES`, the U-Nets of
  ``dynamic_network_architectures`` that nnU-Net plans (its own architectures live there; a bare
  class name such as ``PlainConvUNet`` is accepted, as nnU-Net's fallback accepts it);
- every ``_kw_requires_import`` entry must be a key of ``arch_kwargs`` whose value is None or the
  dotted name of a ``torch.nn`` layer class (``torch.nn.modules.conv.Conv3d``, ``torch.nn.LeakyReLU``),
  looked up attribute by attribute from the already imported ``torch.nn``: nothing is imported;
- ``arch_kwargs`` must be a JSON object whose keys are identifiers.

Anything else is refused with a ModelError naming the member and the name, before any class is
called. :func:`check_architecture` needs no torch (validation); :func:`build_network_on_meta`
builds the network on the 'meta' device.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pantherseg.errors import ModelError, short_repr

if TYPE_CHECKING:
    import torch

_PACKAGE = "dynamic_network_architectures.architectures"
# module (under dynamic_network_architectures.architectures) -> the segmentation networks nnU-Net plans.
ALLOWED_ARCHITECTURES = {
    "unet": ("PlainConvUNet", "ResidualEncoderUNet", "ResidualUNet"),
}
_LAYER_PREFIX = "torch.nn."
# nnU-Net plans 5-8 stages; a billion would hang the build loop even on the meta device.
MAX_STAGES = 16


def allowed_names() -> list[str]:
    return [f"{_PACKAGE}.{module}.{name}" for module, names in ALLOWED_ARCHITECTURES.items() for name in names]


def check_architecture(class_name: object, arch_kwargs: object, requires_import: object, *, owner: str) -> None:
    """Refuse (ModelError) an architecture block that names anything outside the allow-list."""
    _module_and_class(class_name, owner)
    if not isinstance(arch_kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in arch_kwargs):
        raise ModelError(
            f"{owner}: plans.json 'arch_kwargs' must be an object of keyword arguments, "
            f"found {short_repr(arch_kwargs)}."
        )
    stages = arch_kwargs.get("n_stages")
    if stages is not None and not (
        isinstance(stages, int) and not isinstance(stages, bool) and 1 <= stages <= MAX_STAGES
    ):
        raise ModelError(
            f"{owner}: plans.json arch_kwargs 'n_stages' must be an integer in [1, {MAX_STAGES}], "
            f"found {short_repr(stages)}."
        )
    if not isinstance(requires_import, (list, tuple)):
        raise ModelError(
            f"{owner}: plans.json '_kw_requires_import' must be a list of arch_kwargs keys, "
            f"found {short_repr(requires_import)}."
        )
    for key in requires_import:
        if not isinstance(key, str) or key not in arch_kwargs:
            raise ModelError(
                f"{owner}: plans.json '_kw_requires_import' names {short_repr(key)}, which is not a key of "
                f"arch_kwargs; refused (nothing is imported from a model's plans)."
            )
        value = arch_kwargs[key]
        if value is not None and not _is_layer_name(value):
            raise ModelError(
                f"{owner}: plans.json arch_kwargs '{key}' is {short_repr(value)}; only torch.nn layer "
                f"classes (e.g. torch.nn.modules.conv.Conv3d) may be named there; refused."
            )


def _module_and_class(class_name: object, owner: str) -> tuple[str, str]:
    if isinstance(class_name, str):
        if "." not in class_name:
            for module, names in ALLOWED_ARCHITECTURES.items():
                if class_name in names:
                    return module, class_name
        else:
            module_path, _, name = class_name.rpartition(".")
            module = module_path.removeprefix(f"{_PACKAGE}.")
            if module_path.startswith(f"{_PACKAGE}.") and name in ALLOWED_ARCHITECTURES.get(module, ()):
                return module, name
    raise ModelError(
        f"{owner}: plans.json names the architecture {short_repr(class_name)}, which is not an allowed network; "
        f"expected one of {allowed_names()}. Refused before anything was imported or called."
    )


def _is_layer_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(_LAYER_PREFIX)
        and all(part.isidentifier() for part in value.split("."))
    )


def _layer_class(value: str, key: str, owner: str):
    """``torch.nn.X.Y`` -> the class, by attribute lookups from torch.nn (no import, no module loading)."""
    import torch

    found: object = torch.nn
    for part in value[len(_LAYER_PREFIX) :].split("."):
        if part.startswith("_"):
            found = None
            break
        found = getattr(found, part, None)
    if not (isinstance(found, type) and issubclass(found, torch.nn.Module)):
        raise ModelError(
            f"{owner}: plans.json arch_kwargs '{key}' is '{value}', which is not a torch.nn layer class; refused."
        )
    return found


def network_class(class_name: object, *, owner: str):
    module, name = _module_and_class(class_name, owner)
    return getattr(importlib.import_module(f"{_PACKAGE}.{module}"), name)


def build_network_on_meta(
    class_name: object, arch_kwargs: dict, requires_import, *, input_channels: int, output_channels: int, owner: str
) -> "torch.nn.Module":
    """The network the plans describe, on the meta device (allocates nothing), deep supervision off."""
    import torch

    check_architecture(class_name, arch_kwargs, requires_import, owner=owner)
    cls = network_class(class_name, owner=owner)
    kwargs = dict(arch_kwargs)
    for key in requires_import:
        if kwargs[key] is not None:
            kwargs[key] = _layer_class(kwargs[key], key, owner)
    kwargs["deep_supervision"] = False
    try:
        with torch.device("meta"):
            return cls(input_channels=input_channels, num_classes=output_channels, **kwargs)
    except (
        AttributeError,
        TypeError,
        KeyError,
        ValueError,
        RuntimeError,
        IndexError,
        ZeroDivisionError,
        AssertionError,
    ) as error:
        raise ModelError(
            f"{owner}: the plans' architecture {cls.__name__} cannot be built from its arch_kwargs: "
            f"{short_repr(str(error))}."
        ) from error
