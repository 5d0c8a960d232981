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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pantherseg.config import MemberSpec, TaskSpec
from pantherseg.engine.architectures import build_network_on_meta, check_architecture
from pantherseg.engine.checkpoint import Checkpoint, check_finite, check_state_dict_fits, load_checkpoint
from pantherseg.engine.model_files import check_member_folder
from pantherseg.engine.model_schema import SchemaViolation, resolve_configuration, validate_dataset, validate_plans
from pantherseg.errors import ModelError, short_repr
from pantherseg.json_files import read_json_object

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """A validated ensemble member: a frozen description of one fold. Its network is built by a backend
    (pantherseg.engine.networks) and owned by the ensemble, never stored here."""

    spec: MemberSpec
    folder: Path
    plans: dict
    dataset_json: dict
    checkpoint: Checkpoint
    plans_manager: object = field(repr=False)
    configuration_manager: object = field(repr=False)
    label_manager: object = field(repr=False)

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
        raise ModelError(f"{owner}: model folder not found: expected an nnU-Net results folder at {folder}.")
    check_member_folder(folder, weights_root, owner)
    plans = _read_json(folder / "plans.json", owner)
    dataset_json = _read_json(folder / "dataset.json", owner)

    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or spec.configuration not in configurations:
        found = sorted(configurations) if isinstance(configurations, dict) else configurations
        raise ModelError(
            f"{owner}: plans.json has no configuration '{spec.configuration}'; it defines {short_repr(found)}."
        )
    # Before anything names, imports or calls a class: plans.json comes from an uploaded tarball.
    try:
        architecture = resolve_configuration(plans, spec.configuration).get("architecture")
        if not isinstance(architecture, dict):
            raise SchemaViolation(f"configurations.{spec.configuration}.architecture", "an object", architecture)
        check_architecture(
            architecture.get("network_class_name"),
            architecture.get("arch_kwargs"),
            architecture.get("_kw_requires_import", []),
            owner=owner,
        )
        validate_plans(plans, spec.configuration)
    except SchemaViolation as violation:
        raise ModelError(f"{owner}: {folder / 'plans.json'}: {violation}.") from violation
    try:
        validate_dataset(dataset_json)
    except SchemaViolation as violation:
        raise ModelError(f"{owner}: {folder / 'dataset.json'}: {violation}.") from violation
    try:
        plans_manager = PlansManager(plans)
        configuration_manager = plans_manager.get_configuration(spec.configuration)
        label_manager = plans_manager.get_label_manager(dataset_json)
        arch_class = configuration_manager.network_arch_class_name
    except (KeyError, TypeError, ValueError, AssertionError, AttributeError, RecursionError, RuntimeError) as error:
        raise ModelError(f"{owner}: plans.json or dataset.json is not a valid nnU-Net v2 file: {error!r}.") from error
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(channels, dict) or len(channels) != 1:
        raise ModelError(f"{owner}: dataset.json must declare exactly one input channel (one MRI), found {channels!r}.")
    if label_manager.has_regions or label_manager.has_ignore_label:
        raise ModelError(f"{owner}: region-based or ignore-label models are not supported (dataset.json labels).")

    fold_folder = folder / (f"fold_{spec.fold}")
    checkpoint_path = fold_folder / spec.checkpoint
    if not checkpoint_path.is_file():
        available = sorted(p.name for p in folder.glob("fold_*")) or "none"
        raise ModelError(f"{owner}: checkpoint not found: expected {checkpoint_path} (folds present: {available}).")
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


def _read_json(path: Path, owner: str) -> dict:
    return read_json_object(
        path, error=ModelError, what=f"{owner}: {path.name}", missing=f"{owner}: missing {path.name}"
    )


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
        cm.network_arch_class_name,
        cm.network_arch_init_kwargs,
        architecture.get("_kw_requires_import", []),
        input_channels=1,
        output_channels=member.label_manager.num_segmentation_heads,
        owner=member.describe(),
    )


def _check_checkpoint_fits_plans(member: Member) -> None:
    check_state_dict_fits(
        _build_on_meta(member).state_dict(),
        member.checkpoint,
        owner=member.describe(),
        network=member.configuration_manager.network_arch_class_name,
    )


def build_network(member: Member, device: "torch.device") -> "torch.nn.Module":
    """Instantiate the member's network with its checkpoint weights, in eval mode on ``device``."""
    check_finite(member.checkpoint.state_dict, owner=member.describe(), path=member.checkpoint.path)
    network = _build_on_meta(member)
    # assign=True adopts the checkpoint tensors instead of copying into freshly allocated ones.
    network.load_state_dict(member.checkpoint.state_dict, strict=True, assign=True)
    leftover = [name for name, t in network.state_dict().items() if t.is_meta]
    if leftover:
        raise ModelError(f"{member.describe()}: network tensors {leftover[:3]} were not set by the checkpoint.")
    network = network.to(device)
    network.eval()
    return network
