"""Decoding untrusted bytes: refusals with one-line reasons, and every odd format made upright RGB."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facesearch.errors import BadImage
from facesearch.imaging import decode, downscale

LIMITS = {"max_pixels": 50_000_000, "max_bytes": 50 * 1024 * 1024}


def encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save_args)
    return out.getvalue()


def noise_jpeg(width: int = 160, height: int = 120, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encoded(Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)), "JPEG")


def refusal(data: bytes, **limits: int) -> str:
    with pytest.raises(BadImage) as caught:
        decode(data, **{**LIMITS, **limits})
    message = caught.value.message
    assert message and "\n" not in message and "\r" not in message
    assert caught.value.code == "bad_image"
    return message


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# Refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_after_a_jpeg_header_are_rejected_with_a_one_line_reason(seed):
    header = noise_jpeg()[:20]  # SOI and the JFIF APP0 segment
    data = header + np.random.default_rng(seed).bytes(4000)
    message = refusal(data)
    assert "corrupt" in message or "not an image" in message


def test_truncated_jpeg_is_rejected_with_a_one_line_reason():
    data = noise_jpeg()
    message = refusal(data[: len(data) // 2])
    assert "truncated" in message


def test_a_text_file_is_rejected_as_not_an_image():
    message = refusal(b"name,age\nalice,31\nbob,27\n" * 20)
    assert "not an image" in message


def test_an_empty_file_is_rejected_as_empty():
    assert "empty" in refusal(b"")


def test_a_png_over_the_pixel_limit_is_refused_naming_the_limit():
    flat = Image.new("L", (3000, 3000), 200)
    flat.putpixel((10, 10), 0)
    message = refusal(encoded(flat, "PNG"), max_pixels=1_000_000)
    assert "3000x3000" in message and "1000000-pixel limit" in message


def test_a_png_header_declaring_a_huge_size_is_refused_before_decoding():
    # A decompression bomb's header: 100000 x 100000 declared, almost no data behind it.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""))
    message = refusal(data, max_pixels=1_000_000)
    assert "pixel limit" in message and "100000x100000" in message


def test_a_file_over_the_byte_limit_is_refused_naming_the_limit():
    data = noise_jpeg()
    message = refusal(data, max_bytes=len(data) - 1)
    assert f"{len(data) - 1}-byte limit" in message


def test_an_image_exactly_at_the_limits_is_accepted():
    data = noise_jpeg(40, 30)
    image = decode(data, max_pixels=40 * 30, max_bytes=len(data))
    assert (image.width, image.height) == (40, 30)


# Conversions ----------------------------------------------------------------------------


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (20, 16), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    image = decode(data, **LIMITS)
    assert image.format == "GIF"
    assert image.pixels.shape == (16, 20, 3)
    assert (image.pixels == (255, 0, 0)).all()


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour():
    data = encoded(Image.new("CMYK", (32, 24), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = decode(data, **LIMITS)
    assert image.pixels.shape == (24, 32, 3)
    red, green, blue = image.pixels[12, 16].astype(int)
    assert red > 230 and green < 25 and blue < 25


def test_sixteen_bit_greyscale_png_is_scaled_to_eight_bits_not_clipped():
    values = np.full((20, 30), 32768, dtype=np.uint16)
    values[0, 0], values[0, 1], values[0, 2] = 65535, 0, 16384
    data = encoded(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = decode(data, **LIMITS).pixels
    assert pixels.dtype == np.uint8 and pixels.shape == (20, 30, 3)
    assert abs(int(pixels[10, 10, 0]) - 128) <= 1
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[0, 1]) == (0, 0, 0)
    assert abs(int(pixels[0, 2, 0]) - 64) <= 1
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def marked_jpeg(orientation: int) -> bytes:
    """60 wide, 40 high, grey, with a red 12x12 block in the stored top-left corner."""
    array = np.full((40, 60, 3), 128, dtype=np.uint8)
    array[:12, :12] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(Image.fromarray(array), "JPEG", quality=95, exif=exif)


def is_red(pixel: np.ndarray) -> bool:
    red, green, blue = pixel.astype(int)
    return red > 200 and green < 60 and blue < 60


def test_exif_orientation_6_is_turned_upright_with_the_marker_top_right():
    image = decode(marked_jpeg(6), **LIMITS)
    assert (image.width, image.height) == (40, 60)
    assert image.format == "JPEG"
    # Orientation 6 means "rotate 90 degrees clockwise to view": stored top-left goes top-right.
    assert is_red(image.pixels[4, 35])
    assert not is_red(image.pixels[4, 4])
    assert not is_red(image.pixels[55, 4])
    assert not is_red(image.pixels[55, 35])


def test_exif_orientation_8_is_turned_upright_with_the_marker_bottom_left():
    image = decode(marked_jpeg(8), **LIMITS)
    assert (image.width, image.height) == (40, 60)
    # Orientation 8 means "rotate 90 degrees anticlockwise": stored top-left goes bottom-left.
    assert is_red(image.pixels[55, 4])
    assert not is_red(image.pixels[4, 4])
    assert not is_red(image.pixels[4, 35])
    assert not is_red(image.pixels[55, 35])


def test_a_jpeg_without_orientation_keeps_its_shape_and_marker():
    image = decode(marked_jpeg(1), **LIMITS)
    assert (image.width, image.height) == (60, 40)
    assert is_red(image.pixels[4, 4])


def test_transparent_areas_of_a_palette_png_become_white():
    image = Image.new("P", (20, 10), 0)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * (254 * 3))
    image.paste(1, (10, 0, 20, 10))
    data = encoded(image, "PNG", transparency=0)  # palette entry 0 (black) is transparent
    pixels = decode(data, **LIMITS).pixels
    assert (pixels[:, :10] == 255).all()
    assert (pixels[:, 10:] == (10, 20, 30)).all()


def test_transparent_areas_of_an_rgba_png_become_white():
    array = np.zeros((10, 20, 4), dtype=np.uint8)  # transparent black
    array[:, 10:] = (10, 20, 30, 255)
    array[:, 5] = (0, 0, 0, 128)  # half-transparent black: half way to white
    pixels = decode(encoded(Image.fromarray(array), "PNG"), **LIMITS).pixels
    assert (pixels[:, :5] == 255).all()
    assert (pixels[:, 10:] == (10, 20, 30)).all()
    assert (np.abs(pixels[:, 5].astype(int) - 127) <= 2).all()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_colour_key_transparency_in_a_png_also_becomes_white(mode):
    # A tRNS chunk on a greyscale or truecolour PNG marks one value transparent.
    array = np.zeros((10, 20), dtype=np.uint8)
    array[:, 10:] = 100
    image = Image.fromarray(array).convert(mode)
    key = 0 if mode == "L" else (0, 0, 0)
    pixels = decode(encoded(image, "PNG", transparency=key), **LIMITS).pixels
    assert (pixels[:, :10] == 255).all()
    assert (pixels[:, 10:] == 100).all()


def test_greyscale_png_becomes_three_equal_channels():
    array = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    pixels = decode(encoded(Image.fromarray(array, mode="L"), "PNG"), **LIMITS).pixels
    assert pixels.shape == (8, 25, 3)
    for channel in range(3):
        assert (pixels[..., channel] == array).all()


def test_bilevel_png_becomes_black_and_white_rgb():
    image = Image.new("1", (16, 8), 0)
    image.paste(1, (8, 0, 16, 8))
    pixels = decode(encoded(image, "PNG"), **LIMITS).pixels
    assert pixels.shape == (8, 16, 3)
    assert (pixels[:, :8] == 0).all() and (pixels[:, 8:] == 255).all()


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"),
                                      ("PNG", "L"), ("BMP", "RGB"), ("WEBP", "RGB")])
def test_result_is_uint8_c_contiguous_height_width_3(fmt, mode):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).convert(mode)
    decoded = decode(encoded(image, fmt), **LIMITS)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.flags["C_CONTIGUOUS"]
    assert decoded.pixels.shape == (37, 53, 3)
    assert (decoded.width, decoded.height) == (53, 37)
    assert decoded.format == fmt


# Downscaling ----------------------------------------------------------------------------


def test_downscale_caps_the_longest_side_and_the_factor_maps_back():
    pixels = np.zeros((3000, 4000, 3), dtype=np.uint8)
    small, factor = downscale(pixels, 1000)
    assert small.shape == (750, 1000, 3) and small.dtype == np.uint8
    assert factor == pytest.approx(4.0)


def test_downscale_factor_maps_an_awkward_size_back_to_the_original():
    pixels = np.random.default_rng(2).integers(0, 256, (777, 1001, 3), dtype=np.uint8)
    small, factor = downscale(pixels, 500)
    height, width = small.shape[:2]
    assert max(height, width) == 500
    assert width * factor == pytest.approx(1001)
    assert height * factor == pytest.approx(777, abs=factor)


def test_downscale_of_a_portrait_image_caps_its_height():
    small, factor = downscale(np.zeros((1200, 300, 3), dtype=np.uint8), 600)
    assert small.shape == (600, 150, 3)
    assert factor == pytest.approx(2.0)


@pytest.mark.parametrize("shape", [(100, 80, 3), (600, 600, 3)])
def test_downscale_returns_small_images_unchanged_with_factor_one(shape):
    pixels = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    small, factor = downscale(pixels, 600)
    assert factor == 1.0
    assert small is pixels
