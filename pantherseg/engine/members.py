"""Ensemble members: find, validate and build one nnU-Net fold from its results folder.

A member is one fold of an nnU-Net results folder (``plans.json``, ``dataset.json``,
``fold_N/checkpoint_*.pth``). Its network is built from the plans' ``architecture`` block, never
from the trainer class the checkpoint names: the winning team's trainers are not part of upstream
nnU-Net, and inference must not need them.

Validation happens for the whole ensemble before any image is read or any network is allocated:
folders and files exist, JSON parses, all members share one label map that contains the tumour
label, and every checkpoint's tensors match the network its plans describe (compared against a
network built on the 'meta' device, which allocates nothing).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pantherseg.config import MemberSpec, TaskSpec
from pantherseg.engine.architectures import build_network_on_meta, check_architecture
from pantherseg.engine.checkpoint import Checkpoint, load_checkpoint
from pantherseg.errors import ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class Member:
    """A validated ensemble member; ``network`` is set by :func:`build_network`."""

    spec: MemberSpec
    folder: Path
    plans: dict
    dataset_json: dict
    checkpoint: Checkpoint
    plans_manager: object = field(repr=False)
    configuration_manager: object = field(repr=False)
    label_manager: object = field(repr=False)
    network: "torch.nn.Module | None" = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(self.configuration_manager.patch_size)

    @property
    def preprocessing_key(self) -> str:
        """Members with equal keys get identical preprocessed input, so it is computed once for them."""
        cm = self.configuration_manager
        return json.dumps(
            {
                "transpose_forward": list(self.plans_manager.transpose_forward),
                "spacing": list(cm.spacing),
                "normalization_schemes": list(cm.normalization_schemes),
                "use_mask_for_norm": list(cm.use_mask_for_norm),
                "intensity_properties": self.plans_manager.foreground_intensity_properties_per_channel,
                "resampling_fn_data": cm.configuration.get("resampling_fn_data"),
                "resampling_fn_data_kwargs": cm.configuration.get("resampling_fn_data_kwargs"),
                "preprocessor_name": cm.preprocessor_name,
                "channel_names": self.dataset_json.get("channel_names"),
            },
            sort_keys=True,
        )

    def describe(self) -> str:
        return self.spec.describe()


def load_members(task: TaskSpec, weights_root: Path) -> list[Member]:
    """Resolve and validate every member of ``task``; raises ModelError naming the first bad one."""
    weights_root = Path(weights_root)
    if not weights_root.is_dir():
        raise ModelError(f"Weights folder not found: expected a directory at {weights_root}.")
    members = [_resolve_member(spec, weights_root) for spec in task.members]
    _check_label_maps_agree(members, task)
    for member in members:
        _check_checkpoint_fits_plans(member)
    return members


def _resolve_member(spec: MemberSpec, weights_root: Path) -> Member:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    owner = spec.describe()
    folder = weights_root / spec.model
    if not folder.is_dir():
        raise ModelError(
            f"{owner}: model folder not found: expected an nnU-Net results folder at {folder}."
        )
    _refuse_links_outside(folder, weights_root, owner)
    plans = _read_json(folder / "plans.json", owner)
    dataset_json = _read_json(folder / "dataset.json", owner)

    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or spec.configuration not in configurations:
        found = sorted(configurations) if isinstance(configurations, dict) else configurations
        raise ModelError(
            f"{owner}: plans.json has no configuration '{spec.configuration}'; it defines {found}."
        )
    try:
        plans_manager = PlansManager(plans)
        configuration_manager = plans_manager.get_configuration(spec.configuration)
        label_manager = plans_manager.get_label_manager(dataset_json)
        arch_class = configuration_manager.network_arch_class_name
    except (KeyError, TypeError, ValueError, AssertionError, AttributeError, RecursionError) as error:
        raise ModelError(f"{owner}: plans.json or dataset.json is not a valid nnU-Net v2 file: {error!r}.") from None
    architecture = configuration_manager.configuration.get("architecture")
    if not isinstance(architecture, dict):
        raise ModelError(f"{owner}: plans.json configuration '{spec.configuration}' has no 'architecture' object.")
    # Before anything names, imports or calls the class: plans.json comes from an uploaded tarball.
    check_architecture(arch_class, architecture.get("arch_kwargs"), architecture.get("_kw_requires_import", []),
                       owner=owner)
    _check_plans_numbers(configuration_manager, plans_manager, spec.configuration, owner)
    if configuration_manager.previous_stage_name is not None:
        raise ModelError(f"{owner}: cascade stage '{spec.configuration}' needs a previous stage; not supported.")
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(channels, dict) or len(channels) != 1:
        raise ModelError(
            f"{owner}: dataset.json must declare exactly one input channel (one MRI), found {channels!r}."
        )
    if label_manager.has_regions or label_manager.has_ignore_label:
        raise ModelError(f"{owner}: region-based or ignore-label models are not supported (dataset.json labels).")

    fold_folder = folder / (f"fold_{spec.fold}")
    checkpoint_path = fold_folder / spec.checkpoint
    if not checkpoint_path.is_file():
        available = sorted(p.name for p in folder.glob("fold_*")) or "none"
        raise ModelError(
            f"{owner}: checkpoint not found: expected {checkpoint_path} (folds present: {available})."
        )
    checkpoint = load_checkpoint(checkpoint_path, owner=owner)
    if checkpoint.configuration is not None and checkpoint.configuration != spec.configuration:
        raise ModelError(
            f"{owner}: the checkpoint was trained for configuration '{checkpoint.configuration}', "
            f"but the member uses '{spec.configuration}'."
        )
    log.debug("%s: trainer %s, architecture %s", owner, checkpoint.trainer_name, arch_class)
    return Member(
        spec=spec,
        folder=folder,
        plans=plans,
        dataset_json=dataset_json,
        checkpoint=checkpoint,
        plans_manager=plans_manager,
        configuration_manager=configuration_manager,
        label_manager=label_manager,
    )


def _check_plans_numbers(cm, plans_manager, configuration: str, owner: str) -> None:
    """Patch size, target spacing and intensity statistics: the numbers inference divides and multiplies by.

    Why here: a zero patch divides by zero in the tiling, a negative spacing would be blamed on the
    image's header, and a NaN normalisation statistic turns every voxel into NaN: a silently empty mask.
    """
    patch = cm.patch_size
    if not isinstance(patch, (list, tuple)) or len(patch) != 3 or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p <= 4096 for p in patch):
        raise ModelError(f"{owner}: configuration '{configuration}' must have a 3D patch_size of positive integers "
                         f"(at most 4096), found {_short(patch)}; only 3D configurations are supported.")
    spacing = cm.spacing
    if not isinstance(spacing, (list, tuple)) or len(spacing) != 3 or not all(_finite(s) and 0 < s < 1e4 for s in spacing):
        raise ModelError(f"{owner}: configuration '{configuration}' must have a target spacing of three positive "
                         f"finite millimetre values, found {_short(spacing)} in plans.json.")
    properties = plans_manager.foreground_intensity_properties_per_channel
    if not isinstance(properties, dict):
        raise ModelError(f"{owner}: plans.json 'foreground_intensity_properties_per_channel' must be an object, "
                         f"found {_short(properties)}.")
    for channel, values in properties.items():
        if not isinstance(values, dict):
            raise ModelError(f"{owner}: plans.json intensity properties of channel {channel} must be an object, "
                             f"found {_short(values)}.")
        bad = {k: v for k, v in values.items() if not _finite(v)}
        if bad:
            raise ModelError(f"{owner}: plans.json intensity properties of channel {channel} must be finite numbers, "
                             f"found {_short(bad)}; normalising with them would make every voxel NaN.")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse_links_outside(folder: Path, weights_root: Path, owner: str) -> None:
    """A model tarball must not reach outside its folder through symbolic links."""
    root = weights_root.resolve()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink() or path == folder:
            target = path.resolve()
            if target != root and root not in target.parents:
                raise ModelError(
                    f"{owner}: {path} links to {target}, outside the weights folder {root}; refused."
                )


def _read_json(path: Path, owner: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{owner}: missing {path.name}: expected it at {path}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"{owner}: {path} cannot be read: {error}.") from None
    except json.JSONDecodeError as error:
        raise ModelError(f"{owner}: {path} is not valid JSON: {error.msg} at line {error.lineno}.") from None
    if not isinstance(value, dict):
        raise ModelError(f"{owner}: {path} must hold a JSON object, found {type(value).__name__}.")
    return value


def _check_label_maps_agree(members: list[Member], task: TaskSpec) -> None:
    first = members[0]
    reference = _label_map(first)
    for member in members[1:]:
        labels = _label_map(member)
        if labels != reference:
            raise ModelError(
                f"{member.describe()}: its label map {labels} differs from {first.describe()}'s {reference}; "
                f"all members of an ensemble must predict the same labels."
            )
    if task.tumor_label not in reference.values():
        raise ModelError(
            f"Task '{task.name}': tumor_label {task.tumor_label} is not a label of the members "
            f"(their dataset.json labels are {reference})."
        )


def _label_map(member: Member) -> dict[str, int]:
    labels = member.dataset_json.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(v, int) for v in labels.values()):
        raise ModelError(f"{member.describe()}: dataset.json 'labels' must map names to integers, found {labels!r}.")
    return dict(sorted(labels.items(), key=lambda item: item[1]))


def _build_on_meta(member: Member) -> "torch.nn.Module":
    """The network the plans describe, without allocating its weights (allow-listed classes only)."""
    cm = member.configuration_manager
    architecture = cm.configuration["architecture"]
    return build_network_on_meta(
        cm.network_arch_class_name, cm.network_arch_init_kwargs, architecture.get("_kw_requires_import", []),
        input_channels=1, output_channels=member.label_manager.num_segmentation_heads, owner=member.describe(),
    )


def _check_checkpoint_fits_plans(member: Member) -> None:
    expected = _build_on_meta(member).state_dict()
    found = member.checkpoint.state_dict
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k} {list(found[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            details.append(f"{len(mismatched)} tensor(s) of the wrong shape (checkpoint vs plans), e.g. {mismatched[0]}")
        if missing:
            details.append(f"{len(missing)} missing, e.g. '{missing[0]}'")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected, e.g. '{unexpected[0]}'")
        raise ModelError(
            f"{member.describe()}: checkpoint {member.checkpoint.path} does not fit the network in its "
            f"plans.json ({member.configuration_manager.network_arch_class_name}): " + "; ".join(details) + "."
        )


def build_network(member: Member, device: "torch.device") -> "torch.nn.Module":
    """Instantiate the member's network with its checkpoint weights, in eval mode on ``device``."""
    network = _build_on_meta(member)
    # assign=True adopts the checkpoint tensors instead of copying into freshly allocated ones.
    network.load_state_dict(member.checkpoint.state_dict, strict=True, assign=True)
    leftover = [name for name, t in network.state_dict().items() if t.is_meta]
    if leftover:
        raise ModelError(f"{member.describe()}: network tensors {leftover[:3]} were not set by the checkpoint.")
    network = network.to(device)
    network.eval()
    member.network = network
    return network
