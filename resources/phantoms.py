"""Synthetic abdominal MRI phantoms with a pancreas and a pancreatic tumour.

Why this exists: the real PANTHER data cannot be shipped or downloaded here, yet the project needs
trained nnU-Net models, sample cases and ground truth whose quality can be measured. These phantoms
imitate what matters for the pipeline: the image geometry of the two tasks (sizes, anisotropic
spacing, oblique and flipped direction cosines, arbitrary origins and intensity units) and a
segmentation problem of the same kind (a low-contrast tumour inside a curved pancreas, among organs
of similar intensity). They are not realistic anatomy.

Anatomy is built in physical millimetres in a patient frame (x to the patient's left, y posterior,
z superior, like LPS), so the same seed gives the same anatomy whatever the voxel grid. Labels follow
the winning team's convention: 0 background, 1 tumour, 2 pancreas.

Command line (one file per case, compressed .mha)::

    python resources/phantoms.py --task t1 --seeds 1000-1009 --out DIR

writes ``DIR/phantom_t1_1000.mha`` (image, float32) and ``DIR/labels/phantom_t1_1000.mha`` (label,
uint8) and so on. With ``--layout grand-challenge`` and one seed it writes a sample case the way
grand-challenge.org presents it to an algorithm container (see write_grand_challenge_sample)::

    python resources/phantoms.py --task t1 --seeds 1001 --layout grand-challenge --out test/samples/t1-phantom
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

logger = logging.getLogger(__name__)

TASKS = ("t1", "t2")
LABELS = {"background": 0, "tumor": 1, "pancreas": 2}

# Seeds of the training phantoms, of the held-out phantoms, and of the T1 phantoms that pretrain the
# zoo's "foundation" model (the winners' cascade starts from a model pretrained on other data).
# Disjoint ranges, so no held-out case can leak into training whatever the set sizes.
TRAIN_SEEDS = {"t1": tuple(range(0, 30)), "t2": tuple(range(0, 20))}
TEST_SEEDS = {"t1": tuple(range(1000, 1010)), "t2": tuple(range(1000, 1010))}
PRETRAIN_SEEDS = {"t1": tuple(range(500, 524))}

# Tissue intensities relative to the pancreas (1.0). T1: contrast-enhanced, tumour hypo-intense;
# T2: tumour hyper-intense, vessels dark (flow void), fluid bright.
_CONTRAST = {
    "t1": {
        "air": 0.03,
        "fat": 0.55,
        "muscle": 0.42,
        "liver": 0.85,
        "spleen": 0.72,
        "kidney": 1.25,
        "vessel": 1.6,
        "bone": 0.6,
        "canal": 0.25,
        "bowel": (0.3, 0.55),
        "tumour": (0.65, 0.78),
    },
    "t2": {
        "air": 0.03,
        "fat": 0.75,
        "muscle": 0.35,
        "liver": 0.45,
        "spleen": 0.85,
        "kidney": 0.9,
        "vessel": 0.15,
        "bone": 0.5,
        "canal": 1.8,
        "bowel": (0.5, 0.8),
        "tumour": (1.22, 1.35),
    },
}


@dataclass(frozen=True)
class Grid:
    """Voxel grid of one phantom: numpy (z, y, x) shape, SimpleITK (x, y, z) spacing, origin, direction."""

    shape_zyx: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]


def parse_seeds(text: str) -> list[int]:
    """Parse '1000-1009' or '1,2,5' or '3' into a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            first, last = part.split("-", 1)
            start, stop = int(first), int(last)
            if stop < start:
                raise ValueError(f"Seed range must run upwards, not {part!r}")
            seeds.extend(range(start, stop + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"No seeds in {text!r}")
    return seeds


def case_name(seed: int, task: str) -> str:
    """File stem of one phantom, e.g. 'phantom_t1_1000'."""
    return f"phantom_{task}_{seed:04d}"


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation matrix with each Euler angle within +-max_deg degrees."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _make_grid(rng: np.random.Generator, task: str, centre_xyz: np.ndarray, voxel_scale: float) -> Grid:
    """Draw the voxel grid of one case; its centre lands near centre_xyz (patient frame, mm).

    voxel_scale > 1 makes voxels that much larger along every axis, keeping the field of view.
    """
    if task == "t1":
        s = rng.uniform(0.7, 1.3)
        fov_x = rng.uniform(300.0, 380.0)
        fov_y = fov_x * rng.uniform(0.76, 0.86)
        nz = int(rng.integers(64, 81))
        shape_xyz = (int(round(fov_x / s)), int(round(fov_y / s)), nz)
        spacing = (s, s, 3.0)
        jitter = rng.normal(0.0, [8.0, 8.0, 10.0])
    else:
        shape_xyz = (int(rng.integers(150, 181)), int(rng.integers(110, 141)), int(rng.integers(56, 65)))
        spacing = (1.0, 1.0, 2.0)
        jitter = rng.normal(0.0, [10.0, 6.0, 6.0])
    spacing = tuple(v * voxel_scale for v in spacing)
    shape_xyz = tuple(max(8, int(round(n / voxel_scale))) for n in shape_xyz)
    flips = np.diag(np.where(rng.random(3) < np.array([0.25, 0.25, 0.15]), -1.0, 1.0))
    direction = _rotation(rng, 4.0) @ flips
    extent = (np.array(shape_xyz) - 1) * np.array(spacing)
    origin = centre_xyz + jitter - direction @ (extent / 2.0)
    return Grid(
        shape_zyx=(shape_xyz[2], shape_xyz[1], shape_xyz[0]),
        spacing_xyz=tuple(float(v) for v in spacing),
        origin_xyz=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in direction.ravel()),
    )


def _physical_coordinates(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient-frame x, y, z in mm of every voxel, each a float32 (z, y, x) array."""
    nz, ny, nx = grid.shape_zyx
    d = np.array(grid.direction).reshape(3, 3) * np.array(grid.spacing_xyz)[None, :]
    i = np.arange(nx, dtype=np.float32)[None, None, :]
    j = np.arange(ny, dtype=np.float32)[None, :, None]
    k = np.arange(nz, dtype=np.float32)[:, None, None]
    o = np.array(grid.origin_xyz, dtype=np.float32)
    d = d.astype(np.float32)
    return tuple(o[r] + d[r, 0] * i + d[r, 1] * j + d[r, 2] * k for r in range(3))


def _ellipsoid(x, y, z, centre, radii, rotation=None) -> np.ndarray:
    """Normalised ellipsoid distance (<1 inside) of each point; rotation maps body to patient axes."""
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    if rotation is not None:
        r = rotation.astype(np.float32)
        dx, dy, dz = (
            r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz,
        )
    return (dx / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dz / radii[2]) ** 2


@dataclass(frozen=True)
class _Pancreas:
    """A tube along the curve y = y0 + a (x - xm)^2, z = z0 + b (x - x_head), x in [x_head, x_tail]."""

    x_head: float
    x_tail: float
    xm: float
    y0: float
    a: float
    z0: float
    b: float
    r_head: float
    r_tail: float

    def centre(self, x):
        return self.y0 + self.a * (x - self.xm) ** 2, self.z0 + self.b * (x - self.x_head)

    def radius(self, x):
        t = np.clip((x - self.x_head) / (self.x_tail - self.x_head), 0.0, 1.0)
        return self.r_head + (self.r_tail - self.r_head) * t

    def distance(self, x, y, z) -> np.ndarray:
        """Normalised distance (<1 inside) to the tube, with rounded ends."""
        xc = np.clip(x, self.x_head, self.x_tail)
        yc, zc = self.centre(xc)
        slope_y = 2.0 * self.a * (xc - self.xm)
        # Perpendicular distance in y of a tilted tube, approximated by the vertical one times cos.
        dy = (y - yc) / np.sqrt(1.0 + slope_y**2)
        dz = z - zc
        dx = x - xc
        return (dx**2 + dy**2 + dz**2) / self.radius(xc) ** 2


def _draw_anatomy(rng: np.random.Generator, task: str):
    """Draw every random anatomical parameter of one case (patient frame, mm)."""
    length = rng.uniform(120.0, 180.0)
    span = length / 1.1
    x_head = rng.uniform(-55.0, -30.0)
    pancreas = _Pancreas(
        x_head=x_head,
        x_tail=x_head + span,
        xm=x_head + span * rng.uniform(0.35, 0.5),
        y0=rng.uniform(-5.0, 5.0),
        a=rng.uniform(0.002, 0.006),
        z0=rng.uniform(-10.0, 0.0),
        b=rng.uniform(0.05, 0.25),
        r_head=rng.uniform(10.0, 12.5),
        r_tail=rng.uniform(7.5, 9.0),
    )
    xt = rng.uniform(pancreas.x_head + 0.1 * span, pancreas.x_tail - 0.15 * span)
    yt, zt = pancreas.centre(xt)
    offset = rng.normal(size=3)
    offset *= rng.uniform(0.0, 0.8) * pancreas.radius(xt) / np.linalg.norm(offset)
    diameter = rng.uniform(18.0, 45.0)
    tumour_centre = np.array([xt, yt, zt]) + offset
    lobes = []
    for _ in range(int(rng.integers(1, 4))):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        lobes.append(
            (
                tumour_centre + direction * diameter * rng.uniform(0.15, 0.3),
                diameter / 2 * rng.uniform(0.45, 0.7, size=3),
                _rotation(rng, 90.0),
            )
        )
    bowel = []
    for _ in range(int(rng.integers(5, 10))):
        centre = np.array([rng.uniform(-110, 110), rng.uniform(-95, -40), rng.uniform(-90, 60)])
        bowel.append(
            (centre, rng.uniform(12, 35, size=3), _rotation(rng, 90.0), rng.uniform(*_CONTRAST[task]["bowel"]))
        )
    return {
        "body": (rng.uniform(145, 175), rng.uniform(100, 125)),
        "liver": (
            np.array([rng.uniform(-95, -75), rng.uniform(-20, 0), rng.uniform(50, 70)]),
            np.array([rng.uniform(75, 95), rng.uniform(70, 85), rng.uniform(65, 85)]),
        ),
        "spleen": (
            np.array([rng.uniform(90, 105), rng.uniform(30, 45), rng.uniform(40, 60)]),
            np.array([rng.uniform(25, 35), rng.uniform(35, 45), rng.uniform(40, 55)]),
        ),
        "kidneys": [
            (
                np.array([sign * rng.uniform(65, 80), rng.uniform(45, 55), rng.uniform(-15, 10)]),
                np.array([rng.uniform(25, 32), rng.uniform(22, 28), rng.uniform(45, 60)]),
                _rotation(rng, 15.0),
            )
            for sign in (-1, 1)
        ],
        "spine_y": rng.uniform(60, 75),
        "vertebra_period": rng.uniform(28, 34),
        "vertebra_phase": rng.uniform(0, 34),
        "pancreas": pancreas,
        "tumour": (tumour_centre, diameter, _rotation(rng, 90.0), lobes),
        "bowel": bowel,
        "tumour_contrast": rng.uniform(*_CONTRAST[task]["tumour"]),
    }


def _render(grid: Grid, anatomy: dict, task: str, rng: np.random.Generator):
    """Paint tissue intensities and labels on the grid; later structures override earlier ones."""
    x, y, z = _physical_coordinates(grid)
    c = _CONTRAST[task]
    image = np.full(grid.shape_zyx, c["air"], dtype=np.float32)
    label = np.zeros(grid.shape_zyx, dtype=np.uint8)

    bx, by = anatomy["body"]
    body = (x / bx) ** 2 + ((y - 10.0) / by) ** 2 < 1.0
    image[body] = c["fat"]
    muscle = body & ((x / (bx - 15)) ** 2 + ((y - 10.0) / (by - 15)) ** 2 > 1.0)
    muscle |= body & ((np.abs(x) - 40) ** 2 / 22**2 + (y - anatomy["spine_y"] - 10) ** 2 / 20**2 < 1.0)
    image[muscle] = c["muscle"]

    centre, radii = anatomy["liver"]
    image[body & (_ellipsoid(x, y, z, centre, radii) < 1.0)] = c["liver"]
    centre, radii = anatomy["spleen"]
    image[body & (_ellipsoid(x, y, z, centre, radii) < 1.0)] = c["spleen"]
    for centre, radii, rot in anatomy["kidneys"]:
        image[_ellipsoid(x, y, z, centre, radii, rot) < 1.0] = c["kidney"]

    sy = anatomy["spine_y"]
    vertebra = (x**2 + (y - sy) ** 2) < 19.0**2
    disc = np.cos(2 * np.pi * (z - anatomy["vertebra_phase"]) / anatomy["vertebra_period"]) > 0.8
    image[vertebra] = c["bone"]
    image[vertebra & disc] = c["bone"] * 1.4
    image[(x**2 + (y - sy - 30) ** 2) < 8.0**2] = c["canal"]
    image[((x - 18) ** 2 + (y - sy + 32) ** 2) < 11.0**2] = c["vessel"]
    image[((x + 22) ** 2 + (y - sy + 30) ** 2) < 12.0**2] = c["vessel"]

    for centre, radii, rot, value in anatomy["bowel"]:
        image[body & (_ellipsoid(x, y, z, centre, radii, rot) < 1.0)] = value

    pancreas = anatomy["pancreas"].distance(x, y, z) < 1.0
    image[pancreas] = 1.0
    label[pancreas] = LABELS["pancreas"]

    centre, diameter, rot, lobes = anatomy["tumour"]
    tumour = _ellipsoid(x, y, z, centre, diameter / 2 * np.array([1.0, 0.85, 0.75]), rot) < 1.0
    for lobe_centre, lobe_radii, lobe_rot in lobes:
        tumour |= _ellipsoid(x, y, z, lobe_centre, lobe_radii, lobe_rot) < 1.0
    image[tumour] = anatomy["tumour_contrast"]
    label[tumour] = LABELS["tumor"]
    return image, label, (x, y, z)


def _degrade(image: np.ndarray, grid: Grid, coords, rng: np.random.Generator, task: str) -> np.ndarray:
    """Partial volume, bias field, noise and arbitrary scanner units."""
    sigma_mm = 0.8 if task == "t1" else 0.6
    sigma = [sigma_mm / grid.spacing_xyz[2], sigma_mm / grid.spacing_xyz[1], sigma_mm / grid.spacing_xyz[0]]
    image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    x, y, z = coords
    a = rng.normal(0.0, 1.0, size=6) * np.array([1.5e-3, 1.5e-3, 1.5e-3, 4e-6, 4e-6, 4e-6])
    log_bias = a[0] * x + a[1] * y + a[2] * z + a[3] * x * x + a[4] * y * y + a[5] * z * z
    image = image * np.exp(np.clip(log_bias, -0.5, 0.5)).astype(np.float32)
    noise_sd = rng.uniform(0.04, 0.06)
    real = image + rng.normal(0.0, noise_sd, size=image.shape).astype(np.float32)
    imag = rng.normal(0.0, noise_sd, size=image.shape).astype(np.float32)
    image = np.sqrt(real * real + imag * imag)  # magnitude image: Rician noise, never negative
    return (image * np.float32(10.0 ** rng.uniform(0.0, 3.0))).astype(np.float32)


def make_phantom(seed: int, task: str, *, voxel_scale: float = 1.0) -> tuple[sitk.Image, sitk.Image]:
    """Make one phantom case, fully determined by (seed, task).

    Returns (image, label): image float32 in arbitrary units, label uint8 with 0 background,
    1 tumour, 2 pancreas, on the same grid. Task 't1' imitates the diagnostic contrast-enhanced T1
    scans (about 72 x 258 x 318 voxels at 3 x s x s mm, s in 0.7-1.3 mm); 't2' the MR-Linac T2
    pancreas-region crops (about 60 x 125 x 165 voxels at 2 x 1 x 1 mm).

    voxel_scale (default 1) enlarges the voxels by that factor on the same field of view and the
    same anatomy: tests use it to get tiny cases that still look like the real ones.
    """
    if not voxel_scale >= 1.0:
        raise ValueError(f"voxel_scale must be a number >= 1, not {voxel_scale}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    rng = np.random.default_rng([seed, TASKS.index(task)])
    anatomy = _draw_anatomy(rng, task)
    if task == "t1":
        centre = np.array([0.0, 10.0, 0.0])
    else:
        p = anatomy["pancreas"]
        xm = (p.x_head + p.x_tail) / 2
        centre = np.array([xm, *p.centre(xm)])
    grid = _make_grid(rng, task, centre, voxel_scale)
    image, label, coords = _render(grid, anatomy, task, rng)
    image = _degrade(image, grid, coords, rng, task)

    out_image = sitk.GetImageFromArray(image)
    out_label = sitk.GetImageFromArray(label)
    for out in (out_image, out_label):
        out.SetSpacing(grid.spacing_xyz)
        out.SetOrigin(grid.origin_xyz)
        out.SetDirection(grid.direction)
    return out_image, out_label


def write_phantoms(task: str, seeds: list[int], out_dir: Path) -> list[Path]:
    """Write images to out_dir/<case>.mha and labels to out_dir/labels/<case>.mha (compressed)."""
    out_dir = Path(out_dir)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    written = []
    for seed in seeds:
        image, label = make_phantom(seed, task)
        name = case_name(seed, task)
        sitk.WriteImage(image, str(out_dir / f"{name}.mha"), useCompression=True)
        sitk.WriteImage(label, str(out_dir / "labels" / f"{name}.mha"), useCompression=True)
        logger.info("wrote %s (%s voxels x,y,z)", name, image.GetSize())
        written.append(out_dir / f"{name}.mha")
    return written


GC_INPUT_SLUGS = {"t1": "abdominal-t1-mri", "t2": "abdominal-t2-mri"}
GC_SAMPLE_IMAGE = "9f6c1a4e-5b2d-4c7e-8a31-phantom{seed:04d}.mha"  # a uuid-like name, as on the platform
GC_UPLOAD_NAME = "patient_scan_{task}.mha"  # the uploader's file name: differs from the stored one
GC_SAMPLE_MAX = 4000.0


def write_grand_challenge_sample(task: str, seed: int, root: Path) -> Path:
    """Write one case in grand-challenge.org's algorithm layout under root; returns the image path.

    root/input/images/<slug>/<uuid-like>.mha: the image, stored as int16 (intensities rescaled to a
    maximum of GC_SAMPLE_MAX) so the sample stays small and the engine sees an integer scanner image;
    root/input/inputs.json: the platform's description of the inputs, whose image name is the
    uploader's file name and deliberately differs from the stored file name;
    root/ground-truth/<same name>.mha: the reference tumour mask, uint8 {0, 1} (the challenge scores
    the tumour only).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    slug = GC_INPUT_SLUGS[task]
    root = Path(root)
    image, label = make_phantom(seed, task)
    array = sitk.GetArrayFromImage(image)
    scaled = sitk.GetImageFromArray(np.round(array * (GC_SAMPLE_MAX / float(array.max()))).astype(np.int16))
    tumour = sitk.GetImageFromArray((sitk.GetArrayFromImage(label) == LABELS["tumor"]).astype(np.uint8))
    for out in (scaled, tumour):
        out.CopyInformation(image)
    name = GC_SAMPLE_IMAGE.format(seed=seed)
    image_dir = root / "input" / "images" / slug
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "ground-truth").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(scaled, str(image_dir / name), useCompression=True)
    sitk.WriteImage(tumour, str(root / "ground-truth" / name), useCompression=True)
    inputs = [
        {
            "pk": f"00000000-0000-4000-8000-{seed:012d}",
            "interface": {
                "title": slug.replace("-", " ").title().replace("Mri", "MRI"),
                "description": "",
                "slug": slug,
                "kind": "Image",
                "pk": 100 + TASKS.index(task),
                "default_value": None,
                "super_kind": "Image",
                "relative_path": f"images/{slug}",
                "overlay_segments": [],
                "look_up_table": None,
            },
            "value": None,
            "file": None,
            "image": {
                "pk": f"00000000-0000-4000-9000-{seed:012d}",
                "name": GC_UPLOAD_NAME.format(task=task),
            },
        }
    ]
    (root / "input" / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
    logger.info("wrote grand-challenge sample %s of %s seed %d", root, task, seed)
    return image_dir / name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--seeds", required=True, help="e.g. 1000-1009 or 1,2,3 (held-out: 1000-1009)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--layout",
        choices=("plain", "grand-challenge"),
        default="plain",
        help="plain: <case>.mha + labels/<case>.mha; grand-challenge: one sample case",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as error:
        parser.error(str(error))
    if args.layout == "grand-challenge":
        if len(seeds) != 1:
            parser.error(f"--layout grand-challenge writes one case; got {len(seeds)} seeds")
        write_grand_challenge_sample(args.task, seeds[0], args.out)
    else:
        write_phantoms(args.task, seeds, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
