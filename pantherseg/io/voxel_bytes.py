"""Are all the voxels the header promises present in the file? Checked before SimpleITK reads them.

MetaImage (``.mha``/``.mhd``) files are checked the same way: the bytes after the header (or in the
data file), or the zlib stream inflated with a bound (:func:`_check_metaimage`).

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
measurement (5.3 s beside ITK's 6.3 s read of a 315 MB image: about 1.8x the reading time).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

from pantherseg.errors import InputError

CHUNK_BYTES = 1 << 20
NIFTI1_HEADER, NIFTI2_HEADER = 348, 540


def check_voxels_present(path: Path, voxel_bytes: int, data_path: Path | None = None) -> None:
    """Raise InputError if ``path`` (NIfTI or MetaImage; ``data_path``: a MetaImage's detached voxel file)
    holds fewer than ``voxel_bytes`` of voxels."""
    name = path.name.lower()
    if name.endswith((".mha", ".mhd")):
        _check_metaimage(path, voxel_bytes, data_path)
    elif name.endswith(".nii.gz"):
        _check_gzip(path, voxel_bytes)
    elif name.endswith(".nii"):
        with open(path, "rb") as handle:
            offset = vox_offset(handle.read(NIFTI2_HEADER), path.name)
        _check_size(path.name, path.stat().st_size, offset + voxel_bytes, "file")


def _check_metaimage(path: Path, voxel_bytes: int, data_path: Path | None) -> None:
    """MetaImage: every voxel byte present, or the zlib stream inflating to (at least) them.

    ITK reads a compressed stream that fails to inflate ("Uncompress failed" on stderr) as success, the
    voxels then being whatever its buffer held (found by tests/io/test_image_header_fuzz.py); and with a
    HeaderSize it skips bytes no check sees. So: HeaderSize is refused in a LOCAL file (it has no use
    there), and the bytes where ITK will read are checked here."""
    from pantherseg.io.detached_headers import metaimage_fields

    fields, local_offset = metaimage_fields(path)
    compressed = fields.get("compresseddata", "false").lower() == "true"
    header_size = int(fields.get("headersize", "0") or 0)
    if data_path is None:
        if "headersize" in fields:
            raise InputError(
                f"{path.name}: a LOCAL MetaImage with HeaderSize {header_size}; the voxels follow the "
                f"header, so HeaderSize has no use here and would make the reader skip bytes. Refused."
            )
        source, start = path, local_offset
    else:
        source = data_path
        start = max(0, source.stat().st_size - voxel_bytes) if header_size == -1 else header_size
    size = source.stat().st_size
    if not compressed:
        _check_size(path.name, size - start, voxel_bytes, "voxel data")
        return
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header, as ITK's reader accepts
    seen = 0
    try:
        with open(source, "rb") as handle:
            handle.seek(start)
            while seen < voxel_bytes and (block := handle.read(CHUNK_BYTES)):
                seen += len(inflater.decompress(block, voxel_bytes - seen + 1))
                while inflater.unconsumed_tail and seen < voxel_bytes:
                    seen += len(inflater.decompress(inflater.unconsumed_tail, voxel_bytes - seen + 1))
                if inflater.eof:
                    break
    except zlib.error as error:
        raise InputError(
            f"{path.name}: the compressed voxel data is damaged after {seen} inflated bytes ({error}); "
            f"re-export the image."
        ) from error
    _check_size(path.name, seen, voxel_bytes, "compressed voxel data, inflated,")


def vox_offset(header: bytes, source: str) -> int:
    """Where a NIfTI-1 or NIfTI-2 file's voxels start (its ``vox_offset``), either byte order."""
    for order in "<>":
        if len(header) >= 4 and struct.unpack(order + "i", header[:4])[0] == NIFTI1_HEADER and len(header) >= 112:
            offset = struct.unpack(order + "f", header[108:112])[0]
            if not math.isfinite(offset) or offset < 0:
                raise InputError(
                    f"{source}: the NIfTI header's vox_offset is {offset}; expected where the voxels "
                    f"start, a byte offset of at least {NIFTI1_HEADER}."
                )
            return max(NIFTI1_HEADER, int(offset))
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
        raise InputError(
            f"{path.name}: the gzip stream ends after {seen} decompressed bytes, before its end marker: "
            f"the file is truncated (an interrupted copy or upload?); the header promises "
            f"{_needed(needed, voxel_bytes)} bytes of header and voxels."
        ) from None
    except (OSError, zlib.error) as error:
        raise InputError(
            f"{path.name}: the gzip stream is damaged after {seen} decompressed bytes "
            f"({error}); re-export or copy the image again."
        ) from error
    if needed is None:
        needed = vox_offset(head, path.name) + voxel_bytes
    _check_size(path.name, seen, needed, "decompressed stream")


def _needed(needed: int | None, voxel_bytes: int) -> str:
    return str(needed) if needed is not None else f"at least {NIFTI1_HEADER + voxel_bytes}"


def _check_size(source: str, present: int, needed: int, what: str) -> None:
    if present < needed:
        raise InputError(
            f"{source}: truncated: the header promises {needed} bytes of header and voxels, but the "
            f"{what} holds {present} ({100 * present / max(needed, 1):.0f}%); ITK would fill the rest "
            f"with zeros. Copy or export the image again."
        )
