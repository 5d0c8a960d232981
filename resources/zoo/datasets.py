"""Write the phantom training sets in nnU-Net v2 raw format.

Dataset900_PhantomPretrainT1 pretrains the zoo's foundation model (disjoint seeds); Dataset901_PhantomT1
and Dataset902_PhantomT2 are the two challenge tasks.

Why a module of its own: the dataset layout (names, channel names, label values, file ending) is the
contract between the phantoms and every nnU-Net step after them, and the tests build tiny copies of it.
"""

from __future__ import annotations

import json
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import phantoms  # noqa: E402  (resources/ is a folder of scripts, not a package)

logger = logging.getLogger(__name__)

DATASETS = {
    "pretrain": (900, "Dataset900_PhantomPretrainT1"),
    "t1": (901, "Dataset901_PhantomT1"),
    "t2": (902, "Dataset902_PhantomT2"),
}
PHANTOM_TASK = {"pretrain": "t1", "t1": "t1", "t2": "t2"}  # which phantom kind each dataset holds
FILE_ENDING = ".mha"


def dataset_json(key: str, num_training: int) -> dict:
    """nnU-Net dataset.json of one phantom dataset: one MRI channel, labels as in the winning ensemble."""
    return {
        "name": DATASETS[key][1],
        "description": f"Synthetic {PHANTOM_TASK[key].upper()} abdominal MRI phantoms (resources/phantoms.py); "
        "not patient data",
        "channel_names": {"0": "MRI"},
        "labels": dict(phantoms.LABELS),
        "numTraining": num_training,
        "file_ending": FILE_ENDING,
    }


def _write_case(args: tuple[str, int, str, float]) -> str:
    """Write one case; an existing pair is kept (phantoms are deterministic, so it is the same case)."""
    task, seed, raw_dir, voxel_scale = args
    name = phantoms.case_name(seed, task)
    image_path = Path(raw_dir) / "imagesTr" / f"{name}_0000{FILE_ENDING}"
    if image_path.exists() and (Path(raw_dir) / "labelsTr" / f"{name}{FILE_ENDING}").exists():
        return name
    image, label = phantoms.make_phantom(seed, task, voxel_scale=voxel_scale)
    sitk.WriteImage(image, str(Path(raw_dir) / "imagesTr" / f"{name}_0000{FILE_ENDING}"), useCompression=True)
    sitk.WriteImage(label, str(Path(raw_dir) / "labelsTr" / f"{name}{FILE_ENDING}"), useCompression=True)
    return name


def write_raw_dataset(
    key: str, seeds: list[int], nnunet_raw: Path, *, num_processes: int = 2, voxel_scale: float = 1.0
) -> Path:
    """Generate the phantoms of `seeds` into nnunet_raw/<DATASETS[key] name>; returns that folder.

    voxel_scale > 1 gives coarser, smaller cases of the same anatomy (smoke runs and tests).
    """
    raw_dir = Path(nnunet_raw) / DATASETS[key][1]
    task = PHANTOM_TASK[key]
    (raw_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw_dir / "labelsTr").mkdir(parents=True, exist_ok=True)
    jobs = [(task, seed, str(raw_dir), voxel_scale) for seed in seeds]
    if num_processes > 1:
        with ProcessPoolExecutor(num_processes) as pool:
            names = list(pool.map(_write_case, jobs))
    else:
        names = [_write_case(job) for job in jobs]
    (raw_dir / "dataset.json").write_text(json.dumps(dataset_json(key, len(names)), indent=2))
    logger.info("wrote %d %s phantoms to %s", len(names), task, raw_dir)
    return raw_dir
