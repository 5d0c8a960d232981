"""The ensemble engine: one image in, one tumour mask out.

Data flow for one case::

    Volume (1, z, y, x) --preprocess once per preprocessing group--> network input
      --sliding window, member by member in priority order--> logits (preprocessed space)
      --weighted mean over the members of one model folder (its folds)--> folder logits
      --export once per folder (resample, softmax, uncrop, untranspose)--> probabilities (image space)
      --weighted mean over folders--> argmax == tumour label --> uint8 mask (z, y, x)

This is ``nnUNetPredictor`` per model folder (over its folds) followed by ``nnUNetv2_ensemble`` across
folders, with per-member weights, without writing probabilities to disk, and with a deadline that skips
members which cannot finish.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pantherseg.config import EnsembleConfig, TaskSpec
from pantherseg.engine.deadline import Deadline, TileCostModel
from pantherseg.engine.members import Member, load_members
from pantherseg.engine.networks import Backend, Network, make_backend
from pantherseg.engine.outcomes import MemberOutcome, MemberStatus
from pantherseg.engine.quality import tumour_mask
from pantherseg.engine.runtime import EngineOptions, resolve_backend, resolve_device, resolve_precision
from pantherseg.engine.stage_timer import StageTimer
from pantherseg.engine.weighted_mean import (
    FolderResult,
    ModelFolders,
    SharedPreprocessing,
    WeightedMean,
    uncovered_to_background,
)
from pantherseg.errors import ModelError, ResourceError
from pantherseg.io.images import Volume

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    mask: np.ndarray  # (z, y, x) uint8 in {0, 1}: 1 where the ensemble's argmax is the tumour label
    probabilities: np.ndarray | None  # (classes, z, y, x) float32 weighted mean, None if nothing ran
    member_probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    # Quality control (pantherseg.engine.quality): each used member's own tumour mask, (z, y, x) bool.
    member_tumour_masks: dict[str, np.ndarray] = field(default_factory=dict)
    outcomes: list[MemberOutcome] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def members_used(self) -> list[str]:
        return [o.name for o in self.outcomes if o.status.used]


class ProgressListener:
    """Receives progress events; the default does nothing (see pantherseg.progress)."""

    def member_started(self, name: str, tiles_total: int) -> None:
        pass

    def tiles_done(self, name: str, done: int, total: int) -> None:
        pass

    def member_finished(self, outcome: MemberOutcome) -> None:
        pass


class Ensemble:
    """A validated, loaded ensemble for one task. Load once, predict many cases.

    The ensemble owns its members' networks (``networks``: member name -> network), built by its
    backend when a member first runs. ``keep_networks`` keeps them for the next case (an ensemble loaded
    once predicts many cases); False releases each right after its member ran, so only one member's
    weights are in memory at a time (6 ResEnc-L = 2.4 GB): what a single case wants.
    """

    def __init__(
        self,
        *,
        config: EnsembleConfig,
        task: TaskSpec,
        members: list[Member],
        backend: Backend,
        device,
        weights: Path | None = None,
        autocast_dtype=None,
        tile_batch_size: int = 1,
        cpu_threads: int | None = None,
        load_s: float = 0.0,
        keep_networks: bool = True,
    ):
        self.config = config
        self.weights = weights  # the weights root the members were found in (for the run report)
        self.task = task
        self.members = members
        self.backend = backend
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.tile_batch_size = tile_batch_size
        self.cpu_threads = cpu_threads
        self.load_s = load_s
        self.keep_networks = keep_networks
        self.networks: dict[str, Network] = {}

    @classmethod
    def load(
        cls,
        *,
        config: EnsembleConfig,
        task: str,
        weights: Path,
        engine: EngineOptions = EngineOptions(),
        keep_networks: bool = True,
        backend: Backend | None = None,
    ) -> "Ensemble":
        """Validate every member (files, label maps, checkpoint vs plans), then make the backend (which
        exports or converts what it needs now, not during a case). ``engine``'s precision and backend
        override the config's; ``backend``: one the caller built instead (pantherseg.engine.networks'
        GivenNetworks: stand-in networks for benchmarks and tests)."""
        started = time.perf_counter()
        task_spec = config.task(task)
        members = load_members(task_spec, Path(weights))
        torch_device = resolve_device(engine.device)
        autocast_dtype = resolve_precision(engine.precision or config.precision, torch_device)
        if backend is None:
            backend_name = resolve_backend(engine.backend or config.backend, torch_device, members)
            backend, autocast_dtype = make_backend(backend_name, torch_device, members, autocast_dtype)
        load_s = time.perf_counter() - started
        log.info(
            "Loaded %d members for task %s on %s (%s, %s) in %.1f s",
            len(members),
            task_spec.name,
            torch_device,
            backend.name,
            autocast_dtype or "float32",
            load_s,
        )
        return cls(
            config=config,
            task=task_spec,
            members=members,
            backend=backend,
            device=torch_device,
            weights=Path(weights),
            autocast_dtype=autocast_dtype,
            tile_batch_size=engine.tile_batch_size,
            cpu_threads=engine.cpu_threads,
            load_s=load_s,
            keep_networks=keep_networks,
        )

    def network(self, member: Member) -> Network:
        """The member's network: the one in memory, else a new one from the backend."""
        network = self.networks.get(member.name)
        if network is None:
            network = self.backend.build(member)
            if self.cpu_threads is not None and self.device.type == "cpu":
                network.set_threads(self.cpu_threads)
            self.networks[member.name] = network
        return network

    def release_network(self, member: Member) -> None:
        """Free the member's network (the backend builds it again when the member next runs)."""
        network = self.networks.pop(member.name, None)
        if network is not None:
            network.release()

    def describe_device(self) -> str:
        """What the run report and the cohort's rows call the device: ``cpu (torch, float32)``."""
        return f"{self.device} ({self.backend.name}, {self.autocast_dtype or 'float32'})"

    @property
    def num_classes(self) -> int:
        return self.members[0].label_manager.num_segmentation_heads

    def predict(
        self,
        volume: Volume,
        *,
        deadline: Deadline | None = None,
        keep_member_probabilities: bool = False,
        progress: ProgressListener | None = None,
    ) -> Prediction:
        """Segment one volume; the mask is (z, y, x) uint8 like ``volume.data[0]``.

        Members run in priority order. For each: its group's preprocessed input (shared), the skip
        decision (would it finish in the budget left?), the sliding window (which may stop it), and its
        weighted share of its model folder's logit sum. Once a folder's last member is settled, the
        folder's mean logits go back to image space (one export per folder) and into the weighted
        mean of probabilities across folders (pantherseg.engine.weighted_mean)."""
        progress = progress or ProgressListener()
        deadline = deadline or Deadline.unlimited()
        timer = StageTimer()
        outcomes = [MemberOutcome(m.name, m.spec.role, m.spec.weight) for m in self.members]
        prediction = Prediction(
            mask=np.zeros(volume.shape_zyx, dtype=np.uint8),
            probabilities=None,
            outcomes=outcomes,
            timings_s=timer.seconds,
            notes=list(volume.notes),
        )
        if self._constant_image(volume, prediction):
            return prediction

        cost_model = TileCostModel()
        inputs = SharedPreprocessing(self.members, volume, timer, self.device)
        folders = ModelFolders(self.members)
        mean = WeightedMean()
        export_estimate = 0.0  # the slowest export so far: kept free at the end of the budget
        for member, outcome in zip(self.members, outcomes):
            case = inputs.get(member)
            outcome.tiles_total = _count_tiles(case.data.shape[1:], member.patch_size, self.config.tile_step_size)
            if not (
                folders.has_members and self._would_not_finish(member, outcome, cost_model, deadline, export_estimate)
            ):
                logits, completed = self._run_member(
                    member, case.data, outcome, deadline, export_estimate, may_stop=True, progress=progress
                )
                cost_model.record(_cost_key(member), _patch_voxels(member), outcome.tiles_done, outcome.network_s)
                timer.add("network", outcome.network_s)
                if self._settle_status(outcome, completed, others_finished=folders.has_members):
                    if keep_member_probabilities:  # its own map too: one more export, only when asked
                        own = self._export(member, logits, case.properties, timer, own_map=True)
                        if completed:
                            _require_finite(own, member)
                        prediction.member_probabilities[member.name] = own
                        prediction.member_tumour_masks[member.name] = tumour_mask(own, self._tumour_channel)
                        del own
                    elif folders.shares_export(member):  # quality control needs this fold's own mask
                        prediction.member_tumour_masks[member.name] = self._own_tumour_mask(
                            member, logits, case.properties, timer
                        )
                    folders.add(member, logits, case.properties, complete=completed)
                del logits
            inputs.done(member)
            finished = folders.done(member)
            if finished is not None:
                export_estimate = max(export_estimate, self._add_folder(finished, mean, prediction, timer))
            progress.member_finished(outcome)

        with timer.stage("ensemble"):
            prediction.probabilities = mean.mean()
            prediction.mask = (prediction.probabilities.argmax(0) == self._tumour_channel).astype(np.uint8)
        return prediction

    @property
    def _tumour_channel(self) -> int:
        return tumour_channel(self.members[0], self.task.tumor_label)

    def _own_tumour_mask(self, member: Member, logits, properties: dict, timer: StageTimer) -> np.ndarray:
        """A fold's own tumour mask in image space, from its logits before they join its folder's mean: folds
        that share one export would otherwise share one mask, and their agreement would say nothing."""
        from pantherseg.engine.to_image_space import logits_to_tumour_mask  # torch: imported when needed

        with timer.stage("export"):
            return logits_to_tumour_mask(logits, member, properties, self._tumour_channel)

    @staticmethod
    def _export(member: Member, logits, properties: dict, timer: StageTimer, *, own_map: bool = False):
        """Logits in ``member``'s preprocessed space -> probabilities in image space (timed as 'export')."""
        from pantherseg.engine.to_image_space import logits_to_probabilities  # torch: imported when needed

        with timer.stage("export"):
            probabilities = logits_to_probabilities(logits, member, properties)
            if own_map:
                uncovered_to_background(probabilities)
        return probabilities

    def _add_folder(self, folder: FolderResult, mean: WeightedMean, prediction: Prediction, timer: StageTimer) -> float:
        """One export for the folder's mean logits, then its weighted share of the image-space mean; returns
        the export's seconds (the deadline keeps the slowest free at the end of the budget)."""
        started = time.perf_counter()
        reusable = folder.complete and len(folder.names) == 1 and folder.names[0] in prediction.member_probabilities
        if reusable:  # a lone complete member whose own map was exported already: the same numbers
            probabilities = prediction.member_probabilities[folder.names[0]]
        else:
            probabilities = self._export(folder.member, folder.logits, folder.properties, timer)
            if folder.complete:  # a partial member's unvisited voxels are NaN by design: they carry no weight
                _require_finite(probabilities, folder.member)
        folder.logits = None  # the folder's sums: freed before the mean grows
        export_s = time.perf_counter() - started  # for the deadline: the export just done, reused or not
        with timer.stage("ensemble"):
            mean.add(probabilities, folder.weight, complete=folder.complete)
            # Quality hook: a lone fold's tumour mask is its folder's (folds sharing an export got their own
            # masks from their logits, and --member-outputs members from their own maps, as they ran).
            for name in folder.names:
                if name not in prediction.member_tumour_masks:
                    prediction.member_tumour_masks[name] = tumour_mask(probabilities, self._tumour_channel)
            del probabilities
        return export_s

    @staticmethod
    def _constant_image(volume: Volume, prediction: Prediction) -> bool:
        """No structure to find: nnU-Net would normalise to zeros and predict from bias alone. Every
        member is skipped and the mask stays empty."""
        low, high = float(volume.data.min()), float(volume.data.max())
        if low != high:
            return False
        note = f"constant image (every voxel {low}): empty mask, networks not run"
        log.warning("%s: %s", volume.source, note)
        prediction.notes.append(note)
        for outcome in prediction.outcomes:
            outcome.status, outcome.reason = MemberStatus.SKIPPED, "constant image"
        return True

    @staticmethod
    def _would_not_finish(
        member: Member, outcome: MemberOutcome, cost_model: TileCostModel, deadline: Deadline, export_estimate: float
    ) -> bool:
        """The skip decision, once another member has finished: the measured cost of its tiles (from
        members with the same network) says it would not finish within the budget left."""
        per_tile = cost_model.estimate(_cost_key(member), _patch_voxels(member))
        if per_tile is None:
            return False
        projected = per_tile * outcome.tiles_total + export_estimate
        if projected <= deadline.remaining_for_members():
            return False
        outcome.settle(
            MemberStatus.SKIPPED,
            f"projected {projected:.0f} s ({outcome.tiles_total} tiles) but only "
            f"{max(0.0, deadline.remaining_for_members()):.0f} s of the budget left",
        )
        return True

    @staticmethod
    def _settle_status(outcome: MemberOutcome, completed: bool, *, others_finished: bool) -> bool:
        """ran, partial or stopped after the sliding window; True if the member's logits are used.

        A member the deadline stopped is dropped when another member has finished, and kept as
        ``partial`` when none has (its unvisited voxels get no weight): some mask beats none."""
        if completed:
            outcome.status = MemberStatus.RAN
            return True
        if others_finished:
            outcome.settle(
                MemberStatus.STOPPED,
                f"stopped after {outcome.tiles_done}/{outcome.tiles_total} tiles: "
                f"it would not finish within the budget",
            )
            return False
        outcome.settle(
            MemberStatus.PARTIAL,
            f"only {outcome.tiles_done}/{outcome.tiles_total} tiles fit the budget; kept "
            f"because no other member had finished (its unvisited voxels get no weight)",
        )
        return True

    def _run_member(
        self,
        member: Member,
        data,
        outcome: MemberOutcome,
        deadline: Deadline,
        export_estimate: float,
        *,
        may_stop: bool,
        progress: ProgressListener,
    ):
        """Sliding window for one member; returns (logits, completed)."""
        state = {"completed": True}
        started = deadline.clock()
        progress.member_started(member.name, outcome.tiles_total)

        def on_batch(done: int, total: int) -> bool:
            outcome.tiles_done = done
            progress.tiles_done(member.name, done, total)
            if not may_stop or done >= total:
                return True
            spent = deadline.clock() - started
            projected_rest = spent / done * (total - done) + export_estimate
            if projected_rest > deadline.remaining_for_members():
                state["completed"] = False
                return False
            return True

        network = self.network(member)
        logits = _predict_with_memory_fallback(
            member,
            network,
            data,
            device=self.device,
            num_classes=self.num_classes,
            config=self.config,
            tile_batch_size=self.tile_batch_size,
            on_batch=on_batch,
            autocast_dtype=self.autocast_dtype,
        )
        # Measured on the deadline's clock, so the cost model and the budget speak the same time.
        outcome.network_s = deadline.clock() - started
        if not self.keep_networks:
            self.release_network(member)
        return logits, state["completed"]


def tumour_channel(member: Member, tumor_label: int) -> int:
    """The output channel of ``tumor_label``: its place among the label map's labels, not its value."""
    labels = list(member.label_manager.all_labels)
    if tumor_label not in labels:
        raise ModelError(f"{member.describe()}: tumor_label {tumor_label} is not one of its labels {labels}.")
    return labels.index(tumor_label)


def _require_finite(probabilities: np.ndarray, member: Member) -> None:
    """Post-condition: a mask is made from finite probabilities only (NaN weights give NaN, argmax 0: empty)."""
    if not np.isfinite(probabilities).all():
        raise ModelError(
            f"{member.describe()}: its network produced non-finite probabilities (NaN or infinity) "
            f"from a finite input; its weights are broken. No mask was written."
        )


def _count_tiles(shape, patch_size, step_size) -> int:
    from pantherseg.engine.sliding_window import count_tiles

    return count_tiles(shape, patch_size, step_size)


def _patch_voxels(member: Member) -> int:
    return int(np.prod(member.patch_size))


def _cost_key(member: Member) -> str:
    cm = member.configuration_manager
    return f"{cm.network_arch_class_name}|{cm.network_arch_init_kwargs}|{list(cm.patch_size)}"


def _predict_with_memory_fallback(
    member,
    network,
    data,
    *,
    device,
    num_classes: int,
    config: EnsembleConfig,
    tile_batch_size: int,
    on_batch: Callable[[int, int], bool],
    autocast_dtype=None,
):
    """Run the sliding window; on CUDA out-of-memory, retry with sums on the CPU, then smaller batches."""
    import torch

    from pantherseg.engine.sliding_window import predict_logits

    mirror_axes = None
    if config.use_mirroring:
        mirror_axes = member.checkpoint.mirroring_axes or (0, 1, 2)
    attempts = [(True, tile_batch_size)]
    if device.type == "cuda":
        attempts.append((False, tile_batch_size))
        batch = tile_batch_size
        while batch > 1:
            batch //= 2
            attempts.append((False, batch))
    for index, (on_device, batch) in enumerate(attempts):
        try:
            return predict_logits(
                network,
                data,
                patch_size=member.patch_size,
                num_classes=num_classes,
                step_size=config.tile_step_size,
                device=device,
                accumulate_on_device=on_device,
                tile_batch_size=batch,
                mirror_axes=mirror_axes,
                autocast_dtype=autocast_dtype,
                on_batch=on_batch,
            )
        except torch.cuda.OutOfMemoryError:
            if index == len(attempts) - 1:
                raise ResourceError(
                    f"{member.describe()}: the GPU ran out of memory even with results on the CPU and one tile "
                    f"per batch (patch {list(member.patch_size)}); use a GPU with more memory or --device cpu."
                ) from None
            next_on_device, next_batch = attempts[index + 1]
            log.warning(
                "%s: CUDA out of memory; retrying with sums on %s and %d tile(s) per batch",
                member.name,
                "the GPU" if next_on_device else "the CPU",
                next_batch,
            )
            torch.cuda.empty_cache()
    raise AssertionError("unreachable")
