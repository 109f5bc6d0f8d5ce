"""A corpus of hostile and awkward image files, made in code: decompression bombs whose headers
declare huge sizes behind a few hundred bytes (built with struct and zlib, never by encoding a
huge image), formats we do not open, broken files, and legitimate oddities that must decode."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

UNSUPPORTED = "not an image in a supported format"
OVER_LIMIT = "-pixel limit"
CORRUPT = "corrupt or truncated"


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    refusal: str | None  # a phrase the BadImage message must hold; None: it must decode
    size: tuple[int, int] | None = None  # upright (width, height) when it decodes


def encoded(image: Image.Image, fmt: str, **save_args: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save_args)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int, colour_type: int = 0, depth: int = 8,
                  rows: int = 0) -> bytes:
    """A valid PNG header declaring width x height, with `rows` rows of zeros compressed behind
    it (all of them when rows < 0): zeros compress about a thousandfold."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\x00" * (1 + width * channels * depth // 8)
    squeeze = zlib.compressobj(9)
    body = b"".join(squeeze.compress(row) for _ in range(height if rows < 0 else rows))
    body += squeeze.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body)
            + png_chunk(b"IEND", b""))


def ico_embedding(png: bytes) -> bytes:
    """An icon whose directory says 16x16 but whose one entry is the given PNG."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def icns_embedding(png: bytes) -> bytes:
    """An Apple icon with one 1024x1024 ('ic10') entry holding the given PNG."""
    entry = b"ic10" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian greyscale TIFF, one deflated strip of zeros for all its rows."""
    strip = zlib.compress(b"\x00" * 4096)
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1),
            (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    ifd_size = 2 + 12 * len(tags) + 4
    data_offset = 8 + ifd_size
    entries = b"".join(struct.pack("<HHII", tag, kind, 1, data_offset if tag == 273 else value)
                       for tag, kind, value in tags)
    return (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries
            + struct.pack("<I", 0) + strip)


def gif_declaring(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF whose logical screen and first frame declare these sizes, with one pixel of data."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, *frame, 0)
    return header + descriptor + b"\x02\x02\x44\x01\x00;"


def webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP header declaring width x height (at most 16384 a side) over a few bytes."""
    bits = (width - 1) | (height - 1) << 14
    body = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 32
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring width x height over 64 bytes of pixels."""
    pixels = b"\x00" * 64
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info)) + info + pixels


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to declare width x height."""
    data = bytearray(encoded(Image.new("RGB", (16, 16), (90, 120, 200)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def marked_jpeg(orientation: int) -> bytes:
    """60 wide, 40 high as stored, grey, a red 12x12 block in the stored top-left corner."""
    array = np.full((40, 60, 3), 128, dtype=np.uint8)
    array[:12, :12] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(Image.fromarray(array), "JPEG", quality=95, exif=exif)


def animation(fmt: str) -> bytes:
    frames = [Image.new("RGB", (20, 16), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **extra)


@cache
def corpus() -> tuple[Sample, ...]:
    """Every sample, under the default limits (50 megapixels, 50 MB)."""
    photo = encoded(noise(64, 48), "JPEG")
    png = encoded(noise(64, 48), "PNG")
    deep = np.full((20, 30), 40000, dtype=np.uint16)
    return (
        # Formats we never open, however small their declared size.
        Sample("ico-bomb", ico_embedding(png_declaring(20000, 20000, rows=1)), UNSUPPORTED),
        Sample("icns-bomb", icns_embedding(png_declaring(20000, 20000, rows=1)), UNSUPPORTED),
        Sample("tiff-bomb", tiff_declaring(100_000, 100_000), UNSUPPORTED),
        Sample("tiff-small", encoded(noise(20, 10), "TIFF"), UNSUPPORTED),
        # Declared sizes over the limit: refused before a pixel is decoded.
        Sample("png-huge-ihdr", png_declaring(100_000, 100_000, rows=1), OVER_LIMIT),
        Sample("png-over-limit", png_declaring(8000, 8000, rows=-1), "8000x8000 pixels"),
        Sample("gif-huge-screen", gif_declaring((65535, 65535), (1, 1)), OVER_LIMIT),
        Sample("gif-huge-frame", gif_declaring((10, 10), (9000, 9000)), "9000x9000 pixels"),
        Sample("webp-huge", webp_declaring(16384, 16384), OVER_LIMIT),
        Sample("bmp-huge", bmp_declaring(30000, 30000), OVER_LIMIT),
        Sample("jpeg-huge-sof", jpeg_declaring(65000, 65000), OVER_LIMIT),
        Sample("jpeg-over-limit", jpeg_declaring(8000, 7000), "8000x7000 pixels"),
        # Broken or not images at all.
        Sample("jpeg-truncated", photo[: len(photo) // 2], "truncated"),
        Sample("png-truncated", png[: len(png) // 2], CORRUPT),
        Sample("zero-bytes", b"", "empty file"),
        Sample("text", b"name,age\nalice,31\nbob,27\n" * 20, UNSUPPORTED),
        Sample("html", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
               UNSUPPORTED),
        # Legitimate oddities: decoded, upright, 8-bit RGB.
        Sample("png-1x1", encoded(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), None, (1, 1)),
        Sample("jpeg-1x1", encoded(Image.new("RGB", (1, 1), (1, 2, 3)), "JPEG"), None, (1, 1)),
        Sample("jpeg-cmyk", encoded(Image.new("CMYK", (32, 24), (0, 255, 255, 0)), "JPEG"),
               None, (32, 24)),
        Sample("png-16-bit", encoded(Image.fromarray(deep), "PNG"), None, (30, 20)),
        Sample("gif-animated", animation("GIF"), None, (20, 16)),
        Sample("webp-animated", animation("WEBP"), None, (20, 16)),
        Sample("jpeg-exif-rotated", marked_jpeg(6), None, (40, 60)),
        Sample("png-zeros-within-limit", png_declaring(7000, 7000, rows=-1), None, (7000, 7000)),
    )


def sample(name: str) -> Sample:
    return next(s for s in corpus() if s.name == name)
