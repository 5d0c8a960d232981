"""Are all the voxels the header promises present in the file? Checked before SimpleITK reads them.

ITK's NIfTI reader fills a truncated file's missing voxels with zeros and reports success: a
``.nii.gz`` cut in half, or a plain ``.nii`` cut short, would be segmented as a half-black image with
exit 0 (truncated ``.mha`` and ``.nrrd`` are refused by ITK itself). So, from the header and the bytes
on disk, before any voxel is decoded by ITK:

- plain ``.nii``: the file must hold ``vox_offset + voxels x bytes per voxel`` bytes (a size check);
- ``.nii.gz``: one bounded, streaming decompression counts the bytes the gzip stream holds, stopping
  as soon as it has seen the expected size (so a zlib bomb never inflates past what the header,
  already capped by :func:`pantherseg.io.host_memory.check_voxel_count`, claims); a stream that ends
  early, is damaged or fails its CRC is refused. Memory stays at one 1 MiB block.

The cost: the gzip stream is decompressed twice (here, then by ITK). ``docs/robustness.md`` has the
measurement (about a third more reading time on a 300 MB image).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from pantherseg.errors import InputError

CHUNK_BYTES = 1 << 20
NIFTI1_HEADER, NIFTI2_HEADER = 348, 540


def check_voxels_present(path: Path, voxel_bytes: int) -> None:
    """Raise InputError if ``path`` (a NIfTI file) holds fewer than ``voxel_bytes`` after its header."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        _check_gzip(path, voxel_bytes)
    elif name.endswith(".nii"):
        with open(path, "rb") as handle:
            offset = vox_offset(handle.read(NIFTI2_HEADER), path.name)
        _check_size(path.name, path.stat().st_size, offset + voxel_bytes, "file")


def vox_offset(header: bytes, source: str) -> int:
    """Where a NIfTI-1 or NIfTI-2 file's voxels start (its ``vox_offset``), either byte order."""
    for order in "<>":
        if len(header) >= 4 and struct.unpack(order + "i", header[:4])[0] == NIFTI1_HEADER and len(header) >= 112:
            offset = struct.unpack(order + "f", header[108:112])[0]
            return max(NIFTI1_HEADER, int(offset)) if offset == offset else NIFTI1_HEADER
        if len(header) >= 4 and struct.unpack(order + "i", header[:4])[0] == NIFTI2_HEADER and len(header) >= 176:
            return max(NIFTI2_HEADER, struct.unpack(order + "q", header[168:176])[0])
    raise InputError(f"{source}: not a NIfTI header (its first 4 bytes must give the header size 348 or 540).")


def _check_gzip(path: Path, voxel_bytes: int) -> None:
    """Decompress ``path`` in blocks until the voxels' end is seen; refuse a short or damaged stream."""
    seen, head, needed = 0, b"", None
    try:
        with gzip.open(path, "rb") as stream:
            while True:
                block = stream.read(CHUNK_BYTES)
                if not block:
                    break
                if needed is None:
                    head += block[: NIFTI2_HEADER - len(head)]
                    if len(head) >= NIFTI2_HEADER or seen + len(block) >= NIFTI2_HEADER:
                        needed = vox_offset(head, path.name) + voxel_bytes
                seen += len(block)
                if needed is not None and seen >= needed:
                    return  # everything promised is there; trailing bytes are ITK's concern, not a risk
    except EOFError:
        raise InputError(f"{path.name}: the gzip stream ends after {seen} decompressed bytes, before its end marker: "
                         f"the file is truncated (an interrupted copy or upload?); the header promises "
                         f"{_needed(needed, voxel_bytes)} bytes of header and voxels.") from None
    except (OSError, zlib.error) as error:
        raise InputError(f"{path.name}: the gzip stream is damaged after {seen} decompressed bytes "
                         f"({error}); re-export or copy the image again.") from None
    if needed is None:
        needed = vox_offset(head, path.name) + voxel_bytes
    _check_size(path.name, seen, needed, "decompressed stream")


def _needed(needed: int | None, voxel_bytes: int) -> str:
    return str(needed) if needed is not None else f"at least {NIFTI1_HEADER + voxel_bytes}"


def _check_size(source: str, present: int, needed: int, what: str) -> None:
    if present < needed:
        raise InputError(f"{source}: truncated: the header promises {needed} bytes of header and voxels, but the "
                         f"{what} holds {present} ({100 * present / max(needed, 1):.0f}%); ITK would fill the rest "
                         f"with zeros. Copy or export the image again.")
