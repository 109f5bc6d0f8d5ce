"""The only place bytes become pixels: decode, orient, convert and refuse what is unsafe.

Uploads are hostile until decoded. Only the formats in FORMATS are opened (no ICO, ICNS,
TIFF or any other of Pillow's decoders); the declared size is checked before any pixel is
decoded, against max_pixels and against Pillow's own limit; Pillow's decompression-bomb
guard stays on, as a second line; and any exception while decoding becomes BadImage, never a crash.

Memory bound: one decode holds at most DECODE_BYTES_PER_PIXEL bytes per declared pixel,
so at most that times max_pixels, plus DECODE_SLACK_BYTES; at most `concurrency` decodes run
at once in a process. Measured by tests/unit/test_imaging.py: 8 bytes a pixel for JPEG, PNG,
GIF and BMP (Pillow's image, at most 4 bytes a pixel, and the 3-byte RGB result, converted a
band of rows at a time); 12 for a progressive JPEG with four channels (libjpeg buffers 2
bytes of coefficients per pixel and channel); 16 for WebP (libwebp's decoder keeps two
4-byte canvases and Pillow a copy of the frame).
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, UnidentifiedImageError

from facesearch.config import Settings
from facesearch.errors import BadImage
from facesearch.types import Box, Face

# JPEG (and MPO, camera JPEGs with extra frames, which Pillow opens through JPEG), PNG, GIF
# and WebP are what photos on the web and from phones come as; BMP is a plain bitmap that
# still comes from older cameras and CCTV exports. TIFF is left out on purpose: libtiff's
# many codecs and tiled/strip layouts are the largest attack surface in Pillow, and a TIFF
# converts losslessly to PNG. ICO and ICNS embed images whose size the header does not
# declare, so no check before decoding can bound them.

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
FORMAT_NAMES = "JPEG, PNG, GIF, WebP or BMP"

DECODE_BYTES_PER_PIXEL = 16  # the worst format, WebP; see the module's docstring
DECODE_SLACK_BYTES = 32 * 1024 * 1024  # decoders' own buffers, JPEG's padding to whole blocks
# A progressive JPEG is decoded once per scan, and nothing in the format bounds their number:
# thousands of scans in a few megabytes keep a core busy for minutes. Encoders write about ten
# (libjpeg's progressive script: 10); 100 is libjpeg-turbo's own suggested -maxscans.
MAX_JPEG_SCANS = 100

_BAND_PIXELS = 1 << 18  # pixels converted at a time: temporaries of a few MB, not of the image
_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")


@dataclass(frozen=True)
class DecodedImage:
    """An upright 8-bit RGB image and what it was decoded from.

    A large image is decoded reduced (see decode's reduce_to): pixels is then `scale` times
    smaller on each side than the image, whose upright size is width x height. Coordinates
    found in pixels map back to the image with in_original."""

    pixels: np.ndarray  # uint8 (about height / scale, width / scale, 3), C-contiguous
    format: str  # Pillow's format name: JPEG, MPO, PNG, GIF, WEBP or BMP
    width: int  # of the upright image, in its own pixels
    height: int
    scale: int = 1  # image pixels per decoded pixel, on each side

    def in_original(self, faces: list[Face]) -> list[Face]:
        """Faces found in pixels, with boxes, landmarks and face sizes in the image's own pixels."""
        if self.scale == 1:
            return faces
        s = self.scale
        out = []
        for face in faces:
            box = face.box.scaled(s)
            box = Box(max(0, box.left), max(0, box.top), min(self.width, box.right),
                      min(self.height, box.bottom))
            out.append(replace(face, box=box, landmarks=[(x * s, y * s) for x, y in face.landmarks],
                               quality=replace(face.quality,
                                               face_pixels=min(box.width, box.height))))
        return out


def perceptual_hashes(pixels: np.ndarray) -> tuple[str, str]:
    """The photo's perceptual hash and its mirror image's (imagehash's pHash, 64 bits as hex):
    the same photo resized or recompressed lies a few bits away, another photo of the same
    person usually 16 or more."""
    import imagehash

    image = Image.fromarray(pixels)
    return (str(imagehash.phash(image)),
            str(imagehash.phash(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))))


def hash_bits_apart(first: str, second: str) -> int:
    return bin(int(first, 16) ^ int(second, 16)).count("1")


def decode_for_analysis(data: bytes, settings: Settings) -> DecodedImage:
    """decode with the settings' limits, reduced to the detail face analysis can use. Detection
    sees a copy of at most detect_max_side, where the smallest face it finds is about 80
    pixels wide; twice that side keeps every such face wider than the 150-pixel chip it is
    aligned to, so reducing a larger image loses no accuracy, and saves three quarters of its
    memory or more."""
    return decode(data, max_pixels=settings.max_image_pixels, max_bytes=settings.max_image_bytes,
                  reduce_to=2 * settings.detect_max_side,
                  concurrency=settings.max_concurrent_decodes)


def decode(data: bytes, *, max_pixels: int, max_bytes: int, reduce_to: int | None = None,
           concurrency: int = 2) -> DecodedImage:
    """Decode image bytes to upright RGB, or raise BadImage with a one-line reason.

    EXIF orientation is applied; palette, alpha (composited on white), CMYK, 16-bit and
    greyscale images are converted; animations give their first frame. Images whose
    declared size is over max_pixels are refused before any pixel is decoded.

    reduce_to: images whose longest side is at least twice this are reduced by a whole
    factor, never below it: JPEGs while decoding (libjpeg's DCT scaling, 1/2 to 1/8), the
    rest by averaging right after. None keeps full resolution.
    concurrency: decodes that may run at once in this process; more wait their turn.
    """
    if len(data) == 0:
        raise BadImage("empty file")
    if len(data) > max_bytes:
        raise BadImage(f"file is {len(data)} bytes, over the {max_bytes}-byte limit")
    with _slots(concurrency):
        try:
            return _decode(data, max_pixels, reduce_to)
        except BadImage:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's, not ours
            raise BadImage(_reason(exc, max_pixels)) from None


def _decode(data: bytes, max_pixels: int, reduce_to: int | None) -> DecodedImage:
    # Positioned on frame 0 of an animation, its size enlarged to cover that frame (GIF).
    image = Image.open(io.BytesIO(data), formats=FORMATS)
    fmt = image.format or "unknown"
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(f"image is {width}x{height} pixels, over the {max_pixels}-pixel limit")
    # In a scan's entropy-coded data a 0xFF byte is always followed by 00 (stuffing) or a
    # restart marker, so FF DA occurs as a start-of-scan marker (or, rarely, in metadata).
    if fmt in ("JPEG", "MPO") and data.count(b"\xff\xda") > MAX_JPEG_SCANS:
        raise BadImage(f"JPEG has more than {MAX_JPEG_SCANS} scans")
    # Pillow's own limit, checked here rather than through its warning (it only warns up to
    # twice the limit, and warning filters are per process and not thread-safe to change).
    if width * height > Image.MAX_IMAGE_PIXELS:
        raise BadImage(f"image is {width * height} pixels, over the "
                       f"{Image.MAX_IMAGE_PIXELS}-pixel limit")
    orientation = _orientation(image)
    factor = max(1, max(width, height) // reduce_to) if reduce_to else 1
    scale = 1
    if fmt in ("JPEG", "MPO") and factor >= 2:
        scale = min(8, 1 << (factor.bit_length() - 1))  # the largest power of two <= factor
        image.draft(image.mode, (max(1, width // scale), max(1, height // scale)))
    image.load()
    # Keep the decoded pixels only: the file object goes, and with it whatever its plugin
    # still holds (WebP's decoder keeps its canvas and a copy of the frame, 8 bytes a pixel).
    image = image._new(image.im)
    image = _reducible(image)
    rest = max(1, max(image.size) // reduce_to) if reduce_to else 1
    if rest >= 2:
        image = image.reduce(rest)
        scale *= rest
    pixels = _rgb_array(image)
    del image
    pixels = np.ascontiguousarray(ORIENT[orientation](pixels))
    if orientation >= 5:
        width, height = height, width
    return DecodedImage(pixels=pixels, format=fmt, width=width, height=height, scale=scale)


_semaphores: dict[int, threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()


def _slots(size: int) -> threading.BoundedSemaphore:
    """This process's bound on decodes in flight: one semaphore per configured size."""
    with _semaphores_lock:
        return _semaphores.setdefault(size, threading.BoundedSemaphore(size))


def _reason(exc: Exception, max_pixels: int) -> str:
    """A one-line reason for a decoder's exception."""
    if isinstance(exc, UnidentifiedImageError):
        return f"not an image in a supported format ({FORMAT_NAMES})"
    if isinstance(exc, Image.DecompressionBombError):
        # Pillow refused it while opening, before we saw its size: its message gives the count.
        found = _PILLOW_PIXELS.search(str(exc))
        size = f" {found.group(1)} pixels," if found else ""
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
        return f"image is{size} over the {limit}-pixel limit"
    if isinstance(exc, MemoryError):
        return "image is too large to decode"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not isinstance(exc, (OSError, SyntaxError)) or not detail:
        # struct.error, KeyError, ...: their bare text ("'tRNS'") needs the type beside it.
        detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return f"corrupt or truncated image: {detail[:200]}"


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, 1 to 8; 1 when there is none or it cannot be read: unreadable
    EXIF does not make the pixels unusable."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - see the docstring
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# EXIF orientation -> the view that makes an (height, width, 3) array upright; the same
# transforms as Pillow's ImageOps.exif_transpose, applied to the small RGB result instead
# of to Pillow's 4-byte image.
ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _reducible(image: Image.Image) -> Image.Image:
    """The image in a mode that Image.reduce averages correctly: L, LA, RGB, RGBA or CMYK."""
    if image.mode.startswith("I;16") or image.mode == "I":
        image = _deep_to_grey(image)
    if image.mode == "PA" or "transparency" in image.info:
        # Palette and colour-key (PNG tRNS) transparency become alpha, composited later.
        return image.convert("RGBA")
    if image.mode == "P":
        return image.convert("RGB")
    if image.mode == "1":
        return image.convert("L")
    return image


def _deep_to_grey(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) greyscale to 8 bits, rescaled instead of clipped, a band of
    rows at a time so that no wide (float) copy of the whole image is ever made."""
    width, height = image.size
    top = max(65535, int(image.getextrema()[1]))  # values past 16 bits: stretch to the largest
    grey = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _BAND_PIXELS // max(1, width))
    for y in range(0, height, rows):
        band = np.asarray(image.crop((0, y, width, min(height, y + rows))), dtype=np.float32)
        grey[y:y + rows] = np.clip(np.rint(band * (255.0 / top)), 0, 255)
    return Image.fromarray(grey)


def _rgb_array(image: Image.Image) -> np.ndarray:
    """uint8 (height, width, 3), filled a band of rows at a time: beside the image, only the
    result and one band's temporaries are held."""
    width, height = image.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _BAND_PIXELS // max(1, width))
    for y in range(0, height, rows):
        out[y:y + rows] = _band_rgb(image.crop((0, y, width, min(height, y + rows))))
    return out


def _band_rgb(band: Image.Image) -> np.ndarray:
    if band.mode == "L":
        return np.asarray(band)[..., None]  # broadcast to three equal channels
    if band.mode in ("RGBA", "LA"):
        # Transparent regions become white, not black: black would invent dark pixels.
        rgba = np.asarray(band.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[..., 3:]
        return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.asarray(band.convert("RGB"))  # CMYK, YCbCr, RGB


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
