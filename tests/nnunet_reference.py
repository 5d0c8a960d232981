"""nnU-Net 2.8's own route, the reference the engine is held to.

Per member: ``nnUNetPredictor`` (no mirroring, Gaussian, step 0.5) writes probabilities to .npz
next to its segmentation; then ``nnunetv2.ensembling.ensemble.ensemble_folders`` averages them
and writes the argmax, as ``nnUNetv2_ensemble`` does. Integer member weights are reproduced by
passing a member's folder that many times. The predictor is initialised manually with a network
built from plans.json, because ``initialize_from_trained_model_folder`` needs the checkpoint's
trainer class installed, and the winners' trainers are not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch


def predict_member(model_folder: Path, fold, checkpoint_name: str, image: Path, out_dir: Path,
                   *, configuration: str = "3d_fullres", step_size: float = 0.5, device: str = "cpu") -> Path:
    """One member's probabilities and segmentation in ``out_dir``. On a CUDA device nnU-Net runs as it does by
    default there: everything on the device, fp16 autocast."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((model_folder / "plans.json").read_text())
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    plans_manager = PlansManager(plans)
    cm = plans_manager.get_configuration(configuration)
    checkpoint = torch.load(model_folder / f"fold_{fold}" / checkpoint_name, map_location="cpu", weights_only=False)
    network = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, 1,
                                     plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
                                     allow_init=True, deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=torch.device(device).type == "cuda",
                                device=torch.device(device),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, cm, [checkpoint["network_weights"]], dataset_json,
                                    checkpoint["trainer_name"], None)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files([[str(image)]], [str(out_dir / "case")], save_probabilities=True,
                                 overwrite=True, num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)
    (out_dir / "dataset.json").write_text(json.dumps(dataset_json))
    (out_dir / "plans.json").write_text(json.dumps(plans))
    return out_dir


def reference_tumour_mask(members: list[tuple[Path, object, str, int]], image: Path, work: Path,
                          *, tumor_label: int = 1, device: str = "cpu") -> np.ndarray:
    """members: (model folder, fold, checkpoint name, integer weight). Returns the (z, y, x) uint8 mask."""
    from nnunetv2.ensembling.ensemble import ensemble_folders

    folders = []
    for index, (folder, fold, checkpoint_name, weight) in enumerate(members):
        predicted = predict_member(folder, fold, checkpoint_name, image, work / f"member{index}", device=device)
        folders.extend([str(predicted)] * int(weight))
    merged = work / "ensemble"
    ensemble_folders(folders, str(merged), save_merged_probabilities=False, num_processes=1,
                     dataset_json_file_or_dict=str(Path(folders[0]) / "dataset.json"),
                     plans_json_file_or_dict=str(Path(folders[0]) / "plans.json"))
    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(next(merged.glob("case.*")))))
    return (segmentation == tumor_label).astype(np.uint8)
