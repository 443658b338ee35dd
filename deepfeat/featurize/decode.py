"""Robust image decoding: any file or in-memory image to an RGB ``PIL.Image``.

Every failure becomes an :class:`~deepfeat.exceptions.ImageDecodeError` carrying the path
and a short reason, so a batch job can record it and carry on.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from struct import error as struct_error  # Pillow raises it on corrupt TIFF/EXIF
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepfeat.exceptions import ImageDecodeError

if TYPE_CHECKING:  # torch is imported where pixels become tensors: a server on onnxruntime
    import torch  # decodes with this module and never imports torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "read_bytes",
    "decode_image",
    "decode_pixels",
    "to_rgb",
    "describe_source",
    "sniff_is_image",
]

#: Images with more pixels than this are refused as possible decompression bombs
#: (about 178 megapixels: twice Pillow's own warning threshold).
DEFAULT_MAX_PIXELS = 2 * 89_478_485



def describe_source(source: Any) -> str:
    """Return a printable name for an input (its path, or a short in-memory description)."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, Image.Image):
        return f"<PIL.Image {source.mode} {source.size[0]}x{source.size[1]}>"
    if isinstance(source, np.ndarray):
        return f"<ndarray {source.dtype} {tuple(source.shape)}>"
    return f"<{type(source).__name__}>"


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a whole file, turning OS errors into :class:`ImageDecodeError`."""
    name = os.fsdecode(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageDecodeError(name, "dangling symbolic link") from None
        raise ImageDecodeError(name, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(name, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageDecodeError(name, "permission denied") from None
    except OSError as exc:
        raise ImageDecodeError(name, f"cannot read file: {exc.strerror or exc}") from None
    if not data:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    return data


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    # No warnings filter here: this runs on many decoding threads at once, and the filters are
    # process-wide. Images between Pillow's warning threshold and our limit keep Pillow's own
    # DecompressionBombWarning, shown as the caller's filters decide.
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        fmt = next((f for sig, f in _SIGNATURES if data.startswith(sig)), None)
        if fmt:  # the file says what it is, but Pillow could not parse its header
            raise ImageDecodeError(name, f"corrupt {fmt} file (unreadable header)") from None
        raise ImageDecodeError(name, "not a recognized image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(name, f"corrupt image header: {exc}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageDecodeError(
            name,
            f"decompression bomb refused: {w}x{h} = {w * h:,} pixels exceeds the limit of "
            f"{max_pixels:,} (raise max_pixels if this image is genuine)",
        )
    if w < 1 or h < 1:
        raise ImageDecodeError(name, f"image has no pixels ({w}x{h})")
    return img


def _gray_to_uint8(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float grayscale to 8-bit, keeping relative intensity."""
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        hi = float(finite.max()) if finite.size else 1.0
        scale = 255.0 if hi <= 1.0 else 1.0
        out = np.clip(np.nan_to_num(arr) * scale, 0, 255)
    else:
        hi = int(arr.max()) if arr.size else 0
        if img.mode.startswith("I;16") or hi > 255:
            out = np.clip(arr, 0, 65535) / 257.0
        else:
            out = np.clip(arr, 0, 255)
    return Image.fromarray(out.round().astype(np.uint8), mode="L")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow mode to RGB correctly.

    Transparency (RGBA, LA, PA, palette with a transparent index) is composited over
    ``background``; 16-bit and float grayscale are rescaled to 8 bits instead of clipped;
    CMYK, YCbCr, LAB, HSV and 1-bit images go through Pillow's colour conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _gray_to_uint8(img)
        mode = "L"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGB", rgba.size, background)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return img.convert("RGB")


def decode_image(
    source: Any,
    *,
    draft_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
) -> Image.Image:
    """Decode one image into an RGB ``PIL.Image`` with EXIF orientation applied.

    Parameters
    ----------
    source : str, PathLike, bytes, PIL.Image.Image or numpy.ndarray
        A path, an encoded file's bytes, or an in-memory image (HxW, HxWx3, HxWx4 array).
    draft_size : int, optional
        Shorter side needed downstream. JPEGs much larger than that are decoded at a
        reduced DCT scale (Pillow's draft mode) that still keeps both sides >= it.
    max_pixels : int
        Refuse images whose header claims more pixels (decompression bombs) before
        allocating them.
    data : bytes, optional
        The file's bytes when the caller has already read them (avoids a second read).

    Returns
    -------
    PIL.Image.Image
        A fully loaded RGB image.

    Raises
    ------
    ImageDecodeError
        With the path and a short reason, for every way an input can be bad.

    Examples
    --------
    >>> import numpy as np
    >>> decode_image(np.zeros((4, 6), dtype=np.uint8)).size
    (6, 4)
    """
    name = describe_source(source)
    if isinstance(source, Image.Image):
        img = source
        if img.width * img.height > max_pixels:
            raise ImageDecodeError(name, "image exceeds the pixel limit")
        return to_rgb(ImageOps.exif_transpose(img) or img)
    if isinstance(source, np.ndarray):
        return to_rgb(_array_to_pil(source, name))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
    elif data is None:
        if not isinstance(source, (str, os.PathLike)):
            raise ImageDecodeError(name, "unsupported input type (expected a path, bytes, PIL image or array)")
        data = read_bytes(source)
    img = _open_checked(data, name, max_pixels)
    try:
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return to_rgb(img)
    except ImageDecodeError:
        raise
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg:
            raise ImageDecodeError(name, f"truncated image data ({msg})") from None
        raise ImageDecodeError(name, f"corrupt image data: {msg}") from None
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError, struct_error) as exc:
        raise ImageDecodeError(name, f"corrupt image data: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, f"decompression bomb refused: {exc}") from None


def _draft_reduces(img: Image.Image, draft_size: int | None) -> bool:
    """Whether Pillow's draft mode would decode this JPEG at a reduced DCT scale."""
    if not draft_size:
        return False
    w, h = img.size
    return min(w // draft_size, h // draft_size) >= 2


def _decode_jpeg_tensor(data: bytes) -> torch.Tensor | None:
    """libjpeg-turbo straight into a ``(3, H, W)`` uint8 tensor, or None to use Pillow.

    Pillow decodes into its own 4-byte-per-pixel buffer and ``np.asarray`` then packs it:
    torchvision's decoder fills the array directly, with the same pixels (both are
    libjpeg-turbo with the same settings; checked in tests/test_perf_pixels.py) in about
    half the time (0.76 vs 1.43 ms for a ~500 px Oxford 17 photo on one core). Anything
    unusual -- a warning from libjpeg (it pads truncated data with grey instead of failing),
    bytes after the end-of-image marker, any error -- returns None, and Pillow's path with
    its precise error messages decides.

    The decision is made per file before decoding, never through the warnings filters: this
    runs on several threads at once, and ``warnings.catch_warnings`` swaps a process-wide list
    (two threads interleaving it once left every later warning of the process raised as an
    exception). A file that is cut short lacks the end-of-image marker and goes to Pillow,
    which refuses it; a file whose scan data is corrupt but complete decodes to the same
    pixels in both libraries (the same libjpeg-turbo, which fills and goes on in both).
    """
    if not data.endswith(b"\xff\xd9"):
        return None
    op = _jpeg_op()
    if op is None:
        return None
    import torch

    try:
        return op(torch.frombuffer(bytearray(data), dtype=torch.uint8), _RGB, True)
    except Exception:  # noqa: BLE001 - any doubt goes to the careful path
        return None


_RGB = 3  # torchvision's ImageReadMode.RGB


@functools.lru_cache(maxsize=1)
def _jpeg_op() -> Any:
    """torchvision's registered JPEG decoder op, or None where this torchvision lacks it.

    The op itself, not ``torchvision.io.decode_jpeg``: since torchvision 0.29 that wrapper
    warns of its deprecation on every call, and silencing it per call would need the
    process-wide filters (see :func:`_decode_jpeg_tensor`).
    """
    try:
        import torch
        from torchvision.io import ImageReadMode  # loads torchvision's image ops

        if int(ImageReadMode.RGB.value) != _RGB:  # pragma: no cover - a renumbered enum
            return None
        return torch.ops.image.decode_jpeg
    except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - a torchvision
        return None  # that dropped its decoders: Pillow decodes everything


def decode_pixels(
    source: Any,
    *,
    draft_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
) -> torch.Tensor:
    """Decode one image into an RGB uint8 ``(H, W, 3)`` tensor, EXIF orientation applied.

    The same pixels as ``np.asarray(decode_image(...))`` and the same errors; baseline and
    progressive RGB or grayscale JPEGs that Pillow would decode at full scale take a faster
    decoder that writes the array directly (see :func:`_decode_jpeg_tensor`).

    Examples
    --------
    >>> import numpy as np
    >>> tuple(decode_pixels(np.zeros((4, 6), dtype=np.uint8)).shape)
    (4, 6, 3)
    """
    name = describe_source(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
    elif isinstance(source, (str, os.PathLike)) and data is None:
        data = read_bytes(source)
    if data is not None:
        img = _open_checked(data, name, max_pixels)
        if img.format == "JPEG" and img.mode in ("RGB", "L") and not _draft_reduces(img, draft_size):
            fast = _decode_jpeg_tensor(data)
            if fast is not None:
                return fast.permute(1, 2, 0)
    img = decode_image(source, draft_size=draft_size, max_pixels=max_pixels, data=data)
    import torch

    return torch.from_numpy(np.array(img, dtype=np.uint8))


def _array_to_pil(arr: np.ndarray, name: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageDecodeError(name, "array must be HxW, HxWx1, HxWx3 or HxWx4")
    if arr.size == 0:
        raise ImageDecodeError(name, "array has no pixels")
    if arr.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(arr))
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageDecodeError(name, "array contains NaN or infinite values")
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).round().astype(np.uint8))
    if arr.dtype == np.uint16:
        return Image.fromarray((arr / 257.0).round().astype(np.uint8))
    if arr.dtype.kind in "iub":
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    raise ImageDecodeError(name, f"unsupported array dtype {arr.dtype}")


def sniff_is_image(path: str | Path) -> bool:
    """Return True when a file's first bytes look like an image Pillow can open."""
    try:
        with Image.open(path) as img:
            return bool(img.format)
    except Exception:
        return False

