"""The DICOM attributes the reader uses, as one table: kind, value count and range of each.

Every header value that ``series`` turns into a number goes through :func:`header_values`, which
checks it against :data:`IMAGE_ATTRIBUTES` and raises one ``InputError`` naming the file, the
attribute, what was expected and what was found (an ImagePositionPatient with 2 values, a
PixelSpacing with 3, a NumberOfFrames "abc", a RescaleSlope "n/a"...). A value the table does not
list is never read as a number. Adding a use of a new attribute means adding its row here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pantherseg.errors import InputError


@dataclass(frozen=True)
class Attribute:
    """One attribute: ``kind`` int or float, ``count`` values exactly, each within [low, high];
    ``default`` when the attribute is absent or empty (None: it is required)."""

    name: str
    kind: type
    count: int
    low: float
    high: float
    default: tuple | None = None
    allowed: tuple | None = None  # for enumerated values


# Positions in mm: beyond 1e6 (a kilometre) no scanner writes them, and float32 origins lose all precision.
IMAGE_ATTRIBUTES = (
    Attribute("Rows", int, 1, 1, 65535),
    Attribute("Columns", int, 1, 1, 65535),
    Attribute("ImagePositionPatient", float, 3, -1e6, 1e6),
    Attribute("ImageOrientationPatient", float, 6, -1.001, 1.001),
    Attribute("PixelSpacing", float, 2, 1e-4, 1e4),
    Attribute("NumberOfFrames", int, 1, 1, 1, default=(1,)),
    Attribute("SamplesPerPixel", int, 1, 1, 1, default=(1,)),
    Attribute("BitsAllocated", int, 1, 1, 32, allowed=(1, 8, 16, 32)),
    Attribute("BitsStored", int, 1, 1, 64),
    Attribute("PixelRepresentation", int, 1, 0, 1),
    Attribute("RescaleSlope", float, 1, -1e12, 1e12, default=(1.0,)),
    Attribute("RescaleIntercept", float, 1, -1e12, 1e12, default=(0.0,)),
)
BY_NAME = {attribute.name: attribute for attribute in IMAGE_ATTRIBUTES}


def header_values(header, path: Path | str, source: str) -> dict[str, tuple]:
    """Every attribute of :data:`IMAGE_ATTRIBUTES` of ``header`` as a tuple of checked numbers."""
    values = {attribute.name: attribute_value(header, attribute, path, source) for attribute in IMAGE_ATTRIBUTES}
    if values["BitsStored"][0] > values["BitsAllocated"][0]:
        raise InputError(
            f"{source}: {Path(path).name}: BitsStored {values['BitsStored'][0]} exceeds BitsAllocated "
            f"{values['BitsAllocated'][0]}; the header is corrupt."
        )
    return values


def attribute_value(header, attribute: Attribute, path: Path | str, source: str) -> tuple:
    """One attribute's checked values; InputError if absent (and required), miscounted or out of range."""
    where = f"{source}: {Path(path).name}: {attribute.name}"
    try:
        raw = header.get(attribute.name) if attribute.name in header else None
    except (ValueError, TypeError, OverflowError):  # pydicom converts on access: "abc" as an IS raises
        stored = header.get_item(attribute.name).value
        text = stored.decode("latin-1") if isinstance(stored, bytes) else str(stored)
        raise InputError(
            f"{where} holds {_shown([text.strip()])}, not a number; expected {_expected(attribute)}."
        ) from None
    if raw is None or (hasattr(raw, "value") and raw.value in (None, "", b"")) or raw in ("", b""):
        if attribute.default is not None:
            return attribute.default
        raise InputError(f"{where} is missing; expected {_expected(attribute)}.")
    items = list(raw) if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" else [raw]
    if len(items) != attribute.count:
        raise InputError(f"{where} has {len(items)} value(s) ({_shown(items)}); expected {_expected(attribute)}.")
    numbers = tuple(_number(item, attribute, where) for item in items)
    for number in numbers:
        if not attribute.low <= number <= attribute.high or (attribute.allowed and number not in attribute.allowed):
            raise InputError(f"{where} is {_shown(items)}; expected {_expected(attribute)}.")
    return numbers


def _number(item, attribute: Attribute, where: str):
    try:
        number = float(str(item).strip())
    except ValueError:
        raise InputError(f"{where} holds {_shown([item])}, not a number; expected {_expected(attribute)}.") from None
    if not math.isfinite(number) or (attribute.kind is int and number != int(number)):
        raise InputError(f"{where} holds {_shown([item])}; expected {_expected(attribute)}.")
    return int(number) if attribute.kind is int else number


def _expected(attribute: Attribute) -> str:
    what = "integer" if attribute.kind is int else "number"
    count = "one" if attribute.count == 1 else str(attribute.count)
    span = (
        f"one of {list(attribute.allowed)}"
        if attribute.allowed
        else f"{attribute.low:g}"
        if attribute.low == attribute.high
        else f"in [{attribute.low:g}, {attribute.high:g}]"
    )
    return f"{count} {what}{'' if attribute.count == 1 else 's'} {span}"


def _shown(items) -> str:
    return "\\".join(str(item)[:24] for item in items[:8]) or "empty"
