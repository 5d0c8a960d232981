"""nnU-Net 2.8's own route, the reference the engine is held to.

Per model folder: ONE ``nnUNetPredictor`` (no mirroring, Gaussian, step 0.5) over the folder's folds, as
``nnUNetv2_predict_from_modelfolder -f 0 1 ...`` runs it (fold logits averaged in preprocessed space, one
export), writing probabilities to .npz next to its segmentation; then
``nnunetv2.ensembling.ensemble.ensemble_folders`` averages the folders' probabilities and writes the
argmax, as ``nnUNetv2_ensemble`` does. Integer member weights are reproduced by repetition: a fold's
weights are passed to its folder's predictor that many times, and a folder's output is passed to the
ensembling as many times as its members' weights sum to (the engine's rule, README "ensemble_config.json").
The predictor is initialised manually with a network built from plans.json, because
``initialize_from_trained_model_folder`` needs the checkpoint's trainer class installed, and the winners'
trainers are not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch


def predict_member(
    model_folder: Path,
    fold,
    checkpoint_name: str,
    image: Path,
    out_dir: Path,
    *,
    configuration: str = "3d_fullres",
    step_size: float = 0.5,
    device: str = "cpu",
) -> Path:
    """One member's probabilities and segmentation in ``out_dir`` (a predictor over that one fold)."""
    return predict_folder(
        model_folder,
        [(fold, checkpoint_name, 1)],
        image,
        out_dir,
        configuration=configuration,
        step_size=step_size,
        device=device,
    )


def predict_folder(
    model_folder: Path,
    folds: list[tuple[object, str, int]],
    image: Path,
    out_dir: Path,
    *,
    configuration: str = "3d_fullres",
    step_size: float = 0.5,
    device: str = "cpu",
) -> Path:
    """One predictor over ``folds`` ((fold, checkpoint name, integer weight)) of one model folder: its
    probabilities and segmentation in ``out_dir``. On a CUDA device nnU-Net runs as it does by default there:
    everything on the device, fp16 autocast."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((model_folder / "plans.json").read_text())
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    plans_manager = PlansManager(plans)
    cm = plans_manager.get_configuration(configuration)
    checkpoints = [
        (
            torch.load(model_folder / f"fold_{fold}" / checkpoint_name, map_location="cpu", weights_only=False),
            int(weight),
        )
        for fold, checkpoint_name, weight in folds
    ]
    network = get_network_from_plans(
        cm.network_arch_class_name,
        cm.network_arch_init_kwargs,
        cm.network_arch_init_kwargs_req_import,
        1,
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
        allow_init=True,
        deep_supervision=False,
    )
    predictor = nnUNetPredictor(
        tile_step_size=step_size,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=torch.device(device).type == "cuda",
        device=torch.device(device),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    parameters = [checkpoint["network_weights"] for checkpoint, weight in checkpoints for _ in range(weight)]
    predictor.manual_initialization(
        network, plans_manager, cm, parameters, dataset_json, checkpoints[0][0]["trainer_name"], None
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files(
        [[str(image)]],
        [str(out_dir / "case")],
        save_probabilities=True,
        overwrite=True,
        num_processes_preprocessing=1,
        num_processes_segmentation_export=1,
    )
    (out_dir / "dataset.json").write_text(json.dumps(dataset_json))
    (out_dir / "plans.json").write_text(json.dumps(plans))
    return out_dir


def reference_tumour_mask(
    members: list[tuple[Path, object, str, int]], image: Path, work: Path, *, tumor_label: int = 1, device: str = "cpu"
) -> np.ndarray:
    """members: (model folder, fold, checkpoint name, integer weight). Returns the (z, y, x) uint8 mask."""
    from nnunetv2.ensembling.ensemble import ensemble_folders

    by_folder: dict[Path, list[tuple[object, str, int]]] = {}
    for folder, fold, checkpoint_name, weight in members:
        by_folder.setdefault(Path(folder), []).append((fold, checkpoint_name, int(weight)))
    folders = []
    for index, (folder, folds) in enumerate(by_folder.items()):
        predicted = predict_folder(
            folder, folds, image, work / f"folder{index}", device=device, configuration=configuration_of(folder)
        )
        folders.extend([str(predicted)] * sum(weight for _, _, weight in folds))
    merged = work / "ensemble"
    ensemble_folders(
        folders,
        str(merged),
        save_merged_probabilities=False,
        num_processes=1,
        dataset_json_file_or_dict=str(Path(folders[0]) / "dataset.json"),
        plans_json_file_or_dict=str(Path(folders[0]) / "plans.json"),
    )
    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(next(merged.glob("case.*")))))
    return (segmentation == tumor_label).astype(np.uint8)


def configuration_of(folder: Path) -> str:
    """nnU-Net names a results folder Trainer__Plans__Configuration."""
    parts = Path(folder).name.split("__")
    return parts[-1] if len(parts) >= 3 else "3d_fullres"
