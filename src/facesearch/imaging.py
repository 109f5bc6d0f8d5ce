"""The only place bytes become pixels: decode, orient, convert and refuse what is unsafe."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facesearch.errors import BadImage

# Pillow's own bomb check is a process-wide global; we apply our configurable limit
# explicitly before decoding instead, and disable Pillow's so that one limit applies.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodedImage:
    """An upright 8-bit RGB image and what it was decoded from."""

    pixels: np.ndarray  # uint8, shape (height, width, 3), C-contiguous
    format: str  # Pillow's format name: JPEG, PNG, GIF, ...

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def decode(data: bytes, *, max_pixels: int, max_bytes: int) -> DecodedImage:
    """Decode image bytes to upright RGB, or raise BadImage with a one-line reason.

    EXIF orientation is applied; palette, alpha (composited on white), CMYK, 16-bit and
    greyscale images are converted; animations give their first frame. Images over
    max_pixels are refused before any pixel is decoded.
    """
    if len(data) == 0:
        raise BadImage("empty file")
    if len(data) > max_bytes:
        raise BadImage(f"file is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(
                    f"image is {width}x{height} pixels, over the {max_pixels}-pixel limit"
                )
            image.seek(0)  # first frame of an animation
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        # Pillow reports truncation and corruption as OSError/SyntaxError with its own text.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadImage(f"corrupt or truncated image: {reason}") from None
    pixels = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    return DecodedImage(pixels=pixels, format=image.format or _format_of(data))


def _format_of(data: bytes) -> str:
    try:
        return Image.open(io.BytesIO(data)).format or "unknown"
    except Exception:
        return "unknown"


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) greyscale: rescale to 8 bits instead of clipping.
        array = np.asarray(image).astype(np.float64)
        top = 65535.0 if array.max(initial=0) <= 65535 else float(array.max())
        return Image.fromarray((array * (255.0 / top)).round().astype(np.uint8)).convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min(initial=0)), float(array.max(initial=0))
        scale = 255.0 / (high - low) if high > low else 0.0
        return Image.fromarray(((array - low) * scale).astype(np.uint8)).convert("RGB")
    if mode == "P" or (mode in ("1", "L", "RGB") and "transparency" in image.info):
        # Palette and colour-key (PNG tRNS) transparency become alpha, composited below.
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent regions become white, not black: black would invent dark pixels.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGB


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def downscale(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Return a copy whose longest side is at most max_side, and the factor back to full size."""
    height, width = pixels.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return pixels, 1.0
    factor = longest / max_side
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small), width / size[0]
