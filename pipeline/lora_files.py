"""Checks an uploaded LoRA file before anything loads it.

The bot process runs this on an admin's upload, so it imports neither torch nor safetensors: a
``.safetensors`` file is an 8-byte little-endian header length, a JSON header naming every tensor
(dtype, shape, byte range), then raw tensor bytes. Reading the header is enough to tell a real LoRA
from a renamed text file, a pickle (``.bin``/``.pt``/``.ckpt``, which can run code when loaded and is
never opened here) or a full checkpoint. The header also bounds the tensor count and dimensions.

Then every floating-point value is checked for NaN and infinity, also without numpy: a value is
non-finite exactly when its exponent bits are all ones, and those bits sit in the top byte (or two)
of each little-endian element. Strided slices and ``bytes.translate`` test a whole chunk in C, so a
100 MB file takes a fraction of a second.

The GPU worker runs the same check before it loads any face or style LoRA (``pipeline.lora_merge``,
``pipeline.generate``).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

#: A LoRA header is a few hundred KiB at most; a larger claim is treated as corrupt.
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: An SD 1.5 LoRA on every UNet and text-encoder layer, convolutions and DoRA scales included, holds
#: about 1,600 tensors; anything beyond this many is not one (and would only cost parsing time).
MAX_TENSORS = 4096
#: LoRA weights are vectors (alphas, scales), matrices or 4-D convolution kernels.
MAX_DIMENSIONS = 4
#: The largest LoRA file the worker loads, face or style (an SD 1.5 LoRA of rank 128 is about 150 MB);
#: admins' uploads have their own, lower limit.
MAX_LOAD_BYTES = 512 * 1024 * 1024
#: How much of a tensor is checked at once (a multiple of every element size).
_SCAN_CHUNK = 4 * 1024 * 1024

_DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

# diffusers / peft names: "unet.down_blocks.0....attn1.to_q.lora_A.weight" (also "lora.down", the
# older attention-processor names "to_q_lora.down", an adapter name before ".weight", no prefix).
_PEFT_NAME = re.compile(
    r"^(?:(?:unet|text_encoder|text_encoder_2)\.)?[A-Za-z0-9_.]+?"
    r"[._](?:lora_A|lora_B|lora\.down|lora\.up|lora_down|lora_up|lora_magnitude_vector)"
    r"(?:\.[A-Za-z0-9_]+)?(?:\.weight)?$"
)
_PEFT_ALPHA = re.compile(r"^(?:(?:unet|text_encoder|text_encoder_2)\.)?[A-Za-z0-9_.]+\.alpha$")
# kohya-ss names: "lora_unet_down_blocks_0_..._to_q.lora_down.weight", "lora_te_..._q_proj.alpha".
_KOHYA_NAME = re.compile(r"^lora_(?:unet|te[12]?)_[A-Za-z0-9_]+\.(?:lora_down|lora_up)\.weight$")
_KOHYA_EXTRA = re.compile(r"^lora_(?:unet|te[12]?)_[A-Za-z0-9_]+\.(?:alpha|dora_scale)$")
_DOWN_WEIGHT = re.compile(r"(?:lora_A|lora\.down|lora_down)(?:\.[A-Za-z0-9_]+)?(?:\.weight)?$")
# The LoRA must adapt the UNet or the text encoder, by its module names in either convention.
_TARGETS = re.compile(r"(?:unet|down_blocks|mid_block|up_blocks|text_model|lora_te)")


class LoraFileError(StrEnum):
    """Why a file was refused as a LoRA."""

    NOT_SAFETENSORS = "not_safetensors"
    TOO_LARGE = "too_large"
    BAD_TENSOR_NAMES = "bad_tensor_names"
    BAD_HEADER = "bad_header"
    TOO_MANY_TENSORS = "too_many_tensors"
    NON_FINITE = "non_finite"


class InvalidLoraFile(ValueError):
    """The file is not a usable Stable Diffusion LoRA; ``code`` says why, ``path`` which file (if one)."""

    def __init__(self, code: LoraFileError, detail: str, path: Path | None = None) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
        self.path = path


def _sniff(prefix: bytes) -> str:
    """A hint for a file that is not safetensors, from its first bytes."""
    if prefix.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch .bin/.pt/.ckpt file)"
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (a PyTorch .bin/.pt/.ckpt file)"
    return "not a safetensors file"


def read_safetensors_header(source: Path | str | bytes, max_bytes: int | None = None) -> dict[str, Any]:
    """Parse and check a safetensors header with the standard library only.

    Returns the header (tensor name → {dtype, shape, data_offsets}; ``__metadata__`` included when
    present). Raises :class:`InvalidLoraFile` with ``not_safetensors``, ``too_large`` or
    ``bad_header``.
    """
    return _read_header(source, max_bytes)[0]


def _read_header(source: Path | str | bytes, max_bytes: int | None) -> tuple[dict[str, Any], int]:
    """The checked header and where the data section starts (offsets in the header count from there)."""
    if isinstance(source, bytes):
        total = len(source)
        if max_bytes is not None and total > max_bytes:
            raise InvalidLoraFile(LoraFileError.TOO_LARGE, f"{total} bytes, the limit is {max_bytes}")
        prefix = source[:8]
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        raw = source[8 : 8 + length] if 0 < length <= MAX_HEADER_BYTES else b""
    else:
        path = Path(source)
        total = path.stat().st_size
        if max_bytes is not None and total > max_bytes:
            raise InvalidLoraFile(LoraFileError.TOO_LARGE, f"{total} bytes, the limit is {max_bytes}")
        with path.open("rb") as fh:
            prefix = fh.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
            raw = fh.read(length) if 0 < length <= MAX_HEADER_BYTES else b""

    if length <= 1 or length > total - 8:
        raise InvalidLoraFile(LoraFileError.NOT_SAFETENSORS, _sniff(prefix))
    if length > MAX_HEADER_BYTES:
        raise InvalidLoraFile(LoraFileError.BAD_HEADER, f"header of {length} bytes is implausibly large")
    if not raw.startswith(b"{"):
        raise InvalidLoraFile(LoraFileError.NOT_SAFETENSORS, _sniff(prefix))
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidLoraFile(LoraFileError.BAD_HEADER, f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidLoraFile(LoraFileError.BAD_HEADER, "header is not a JSON object")
    _check_layout(header, data_bytes=total - 8 - length)
    return header, 8 + length


def _check_layout(header: dict[str, Any], data_bytes: int) -> None:
    """Every entry has a known dtype, an integer shape and a byte range that fits it, tiling the data."""
    spans: list[tuple[int, int]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise InvalidLoraFile(LoraFileError.BAD_HEADER, "__metadata__ must map strings to strings")
            continue
        if not isinstance(entry, dict):
            raise InvalidLoraFile(LoraFileError.BAD_HEADER, f"entry {name[:80]!r} is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPE_BYTES:
            raise InvalidLoraFile(LoraFileError.BAD_HEADER, f"unknown dtype {dtype!r} for {name[:80]!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidLoraFile(LoraFileError.BAD_HEADER, f"bad shape for {name[:80]!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
        ):
            raise InvalidLoraFile(LoraFileError.BAD_HEADER, f"bad data_offsets for {name[:80]!r}")
        numel = 1
        for d in shape:
            numel *= d
        if offsets[1] - offsets[0] != numel * _DTYPE_BYTES[dtype]:
            raise InvalidLoraFile(LoraFileError.BAD_HEADER, f"size of {name[:80]!r} does not match its shape")
        spans.append((offsets[0], offsets[1]))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise InvalidLoraFile(LoraFileError.BAD_HEADER, "tensor byte ranges overlap or leave gaps")
        position = end
    if position != data_bytes:
        raise InvalidLoraFile(LoraFileError.BAD_HEADER, "the data section does not match the header")


def is_lora_tensor_name(name: str) -> bool:
    """True for a tensor name of a diffusers/peft or kohya-ss LoRA on a UNet or text encoder."""
    if _KOHYA_NAME.match(name) or _KOHYA_EXTRA.match(name):
        return True
    return bool((_PEFT_NAME.match(name) or _PEFT_ALPHA.match(name)) and _TARGETS.search(name))


def validate_lora_file(path_or_bytes: Path | str | bytes, max_bytes: int) -> None:
    """Raise :class:`InvalidLoraFile` unless this is a plausible SD LoRA in safetensors format.

    Codes: ``too_large`` (over ``max_bytes``: the tensors' total size is the file's, less its header),
    ``not_safetensors`` (a pickle, zip, text or other file), ``bad_header`` (corrupt safetensors
    header, or a tensor of more than :data:`MAX_DIMENSIONS` dimensions), ``too_many_tensors`` (more
    than :data:`MAX_TENSORS`), ``bad_tensor_names`` (tensors that are not LoRA up/down weights of a
    UNet or text encoder: a full checkpoint, an embedding, random names), ``non_finite`` (a NaN or
    infinite weight). A file's error carries its ``path``.
    """
    try:
        header, data_start = _read_header(path_or_bytes, max_bytes)
        _check_tensors(header)
        _check_finite(path_or_bytes, header, data_start)
    except InvalidLoraFile as exc:
        if not isinstance(path_or_bytes, bytes):
            exc.path = Path(path_or_bytes)
        raise


def _check_tensors(header: dict[str, Any]) -> None:
    """Count, dimensions and names of the tensors (the header alone)."""
    names = [name for name in header if name != "__metadata__"]
    if len(names) > MAX_TENSORS:
        raise InvalidLoraFile(LoraFileError.TOO_MANY_TENSORS, f"{len(names)} tensors, at most {MAX_TENSORS}")
    deep = next((name for name in names if len(header[name]["shape"]) > MAX_DIMENSIONS), None)
    if deep is not None:
        dims = len(header[deep]["shape"])
        raise InvalidLoraFile(LoraFileError.BAD_HEADER, f"tensor {deep[:80]!r} has {dims} dimensions")
    if not names:
        raise InvalidLoraFile(LoraFileError.BAD_TENSOR_NAMES, "the file holds no tensors")
    strangers = [name for name in names if not is_lora_tensor_name(name)]
    if strangers:
        shown = ", ".join(repr(name[:80]) for name in strangers[:3])
        raise InvalidLoraFile(
            LoraFileError.BAD_TENSOR_NAMES, f"{len(strangers)} tensor(s) are not LoRA weights, e.g. {shown}"
        )
    if not any(_DOWN_WEIGHT.search(name) for name in names):
        raise InvalidLoraFile(LoraFileError.BAD_TENSOR_NAMES, "no LoRA down/A weights in the file")


# ------------------------------------------------------------------------------------- finite values
# Per float dtype: (element size, index and mask of the byte holding the exponent's top bits, index
# and mask of the byte holding the rest, or -1). A value is NaN or infinite exactly when all of its
# exponent bits are set.
_EXPONENT_BYTES: dict[str, tuple[int, int, int, int, int]] = {
    "F8_E5M2": (1, 0, 0x7C, -1, 0),
    "F8_E4M3": (1, 0, 0x7F, -1, 0),  # the "fn" variant: no infinity, NaN is S.1111.111
    "F16": (2, 1, 0x7C, -1, 0),
    "BF16": (2, 1, 0x7F, 0, 0x80),
    "F32": (4, 3, 0x7F, 2, 0x80),
    "F64": (8, 7, 0x7F, 6, 0xF0),
}
_ALL_SET: dict[int, bytes] = {}


def _all_set_table(mask: int) -> bytes:
    """A ``bytes.translate`` table: 1 for a byte with every bit of ``mask`` set, else 0."""
    table = _ALL_SET.get(mask)
    if table is None:
        table = _ALL_SET[mask] = bytes(1 if b & mask == mask else 0 for b in range(256))
    return table


def has_non_finite(data: bytes, dtype: str) -> bool:
    """Whether little-endian ``dtype`` elements packed in ``data`` include a NaN or an infinity.

    Integer and boolean dtypes are always finite.
    """
    spec = _EXPONENT_BYTES.get(dtype)
    if spec is None:
        return False
    size, top, top_mask, rest, rest_mask = spec
    flags = data[top::size].translate(_all_set_table(top_mask))
    if 1 not in flags:
        return False  # the common case: one pass in C, no element is even close
    if rest < 0:
        return True
    rest_flags = data[rest::size].translate(_all_set_table(rest_mask))
    return int.from_bytes(flags, "little") & int.from_bytes(rest_flags, "little") != 0


def _tensor_chunks(
    source: Path | str | bytes, header: dict[str, Any], data_start: int
) -> Iterator[tuple[str, str, bytes]]:
    """(name, dtype, bytes) of every floating-point tensor, in chunks of at most :data:`_SCAN_CHUNK`."""
    spans = sorted(
        (entry["data_offsets"][0], entry["data_offsets"][1], name, entry["dtype"])
        for name, entry in header.items()
        if name != "__metadata__" and entry["dtype"] in _EXPONENT_BYTES
    )
    if isinstance(source, bytes):
        for begin, end, name, dtype in spans:
            for at in range(data_start + begin, data_start + end, _SCAN_CHUNK):
                yield name, dtype, source[at : min(at + _SCAN_CHUNK, data_start + end)]
        return
    with Path(source).open("rb") as fh:
        for begin, end, name, dtype in spans:
            fh.seek(data_start + begin)
            left = end - begin
            while left > 0:
                chunk = fh.read(min(_SCAN_CHUNK, left))
                if not chunk:
                    raise InvalidLoraFile(LoraFileError.BAD_HEADER, "the file ended inside a tensor")
                left -= len(chunk)
                yield name, dtype, chunk


def _check_finite(source: Path | str | bytes, header: dict[str, Any], data_start: int) -> None:
    for name, dtype, chunk in _tensor_chunks(source, header, data_start):
        if has_non_finite(chunk, dtype):
            raise InvalidLoraFile(LoraFileError.NON_FINITE, f"tensor {name[:80]!r} holds NaN or infinite values")
