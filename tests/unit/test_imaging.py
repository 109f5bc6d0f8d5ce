"""Decoding untrusted bytes: refusals with one-line reasons, and every odd format made upright RGB."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from facesearch import imaging
from facesearch.config import Settings
from facesearch.errors import BadImage
from facesearch.imaging import (
    DECODE_BYTES_PER_PIXEL,
    DECODE_SLACK_BYTES,
    MAX_JPEG_SCANS,
    DecodedImage,
    decode,
    decode_for_analysis,
    downscale,
)
from facesearch.types import Box, Face, FaceQuality
from tests.hostile_images import (
    Sample,
    animation,
    corpus,
    encoded,
    ico_embedding,
    marked_jpeg,
    png_chunk,
    png_declaring,
)

LIMITS = {"max_pixels": 50_000_000, "max_bytes": 50 * 1024 * 1024}


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
    # Pillow's guard refuses it while opening, before our check sees its size: it gives the count.
    assert message == "image is 10000000000 pixels, over the 1000000-pixel limit"


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


# Hostile files ----------------------------------------------------------------------------
# The corpus (tests/hostile_images.py) at the decode level, under the default limits; the web
# tests send it through every upload route.


@pytest.mark.parametrize("sample", corpus(), ids=lambda s: s.name)
def test_every_hostile_file_gets_its_answer(sample: Sample):
    if sample.refusal is not None:
        assert sample.refusal in refusal(sample.data)
        return
    image = decode(sample.data, **LIMITS, reduce_to=3200)
    assert (image.width, image.height) == sample.size
    assert image.pixels.dtype == np.uint8 and image.pixels.flags["C_CONTIGUOUS"]
    assert image.pixels.shape[2] == 3
    assert image.pixels.shape[1] * image.scale >= image.width > (image.pixels.shape[1] - 1) * image.scale


def test_icons_are_refused_even_when_they_declare_a_small_size():
    # The directory says 16x16; the PNG inside is 20000x20000 (400 megapixels, 1.6 GB as RGBA).
    data = ico_embedding(png_declaring(20000, 20000, rows=1))
    assert struct.unpack("<BB", data[6:8]) == (16, 16)  # what a size check before load sees
    assert "not an image in a supported format" in refusal(data)


def test_pillows_own_bomb_guard_stays_on_behind_a_larger_limit():
    assert Image.MAX_IMAGE_PIXELS is not None
    data = png_declaring(10_000, 10_000, rows=1)  # 100 megapixels: over Pillow's 89.5
    assert refusal(data, max_pixels=10**9) == (
        f"image is 100000000 pixels, over the {Image.MAX_IMAGE_PIXELS}-pixel limit")


def test_the_first_frame_of_an_animated_webp_is_decoded():
    image = decode(animation("WEBP"), **LIMITS)
    assert image.format == "WEBP"
    assert (np.abs(image.pixels.astype(int) - (255, 0, 0)) <= 2).all()


@pytest.mark.parametrize("failure", [struct.error("unpack requires a buffer of 4 bytes"),
                                     KeyError("tRNS"), IndexError("list index out of range"),
                                     ValueError("tile cannot extend outside image"),
                                     MemoryError(), ZeroDivisionError("division by zero"),
                                     Image.DecompressionBombError("Image size (999999999 pixels) "
                                                                  "exceeds limit")])
def test_any_exception_from_the_decoder_becomes_a_one_line_bad_image(monkeypatch, failure):
    def load(self, *args):
        raise failure

    data = noise_jpeg()
    monkeypatch.setattr(Image.Image, "load", load)
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    message = refusal(data)
    assert message.startswith(("corrupt or truncated image", "image is"))


# Orientation and reduced decoding ---------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pillow_would(orientation):
    data = marked_jpeg(orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    image = decode(data, **LIMITS)
    assert (image.width, image.height) == (expected.shape[1], expected.shape[0])
    assert (image.pixels == expected).all()


def striped(width: int, height: int) -> Image.Image:
    """Vertical stripes 100 pixels wide, alternately dark and light: positions survive scaling."""
    array = np.full((height, width, 3), 40, dtype=np.uint8)
    for left in range(0, width, 200):
        array[:, left + 100:left + 200] = 220
    return Image.fromarray(array)


def test_a_large_jpeg_is_decoded_reduced_by_dct_scaling_and_keeps_its_own_size():
    data = encoded(striped(6400, 4000), "JPEG", quality=90)
    image = decode(data, **LIMITS, reduce_to=1000)
    assert image.format == "JPEG" and image.scale == 4  # 1/4: 1600 x 1000, not below 1000
    assert image.pixels.shape == (1000, 1600, 3)
    assert (image.width, image.height) == (6400, 4000)
    row = image.pixels[500, :, 0].astype(int)
    assert row[10] < 80 and row[35] > 180 and row[60] < 80  # stripes 25 pixels wide now


def test_a_large_png_is_reduced_by_a_whole_factor_after_decoding():
    image = decode(encoded(striped(3000, 1200), "PNG"), **LIMITS, reduce_to=1000)
    assert image.format == "PNG" and image.scale == 3
    assert image.pixels.shape == (400, 1000, 3)
    assert (image.width, image.height) == (3000, 1200)


def test_a_rotated_reduced_jpeg_reports_its_upright_size():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(striped(4000, 2400), "JPEG", exif=exif)
    image = decode(data, **LIMITS, reduce_to=1000)
    assert (image.width, image.height) == (2400, 4000)
    assert image.pixels.shape == (1000, 600, 3) and image.scale == 4


def test_images_under_twice_the_reduction_side_keep_full_resolution():
    image = decode(encoded(striped(1999, 1000), "JPEG"), **LIMITS, reduce_to=1000)
    assert image.scale == 1 and image.pixels.shape == (1000, 1999, 3)


def test_faces_found_in_a_reduced_image_map_back_to_the_image_pixels():
    image = DecodedImage(np.zeros((100, 150, 3), np.uint8), "JPEG", width=598, height=400, scale=4)
    face = Face(Box(10, 20, 40, 60), 1.0, [(12, 30), (149, 99)], FaceQuality(30, 0.5, 1.0), np.zeros(128, np.float32), b"")
    [mapped] = image.in_original([face])
    assert mapped.box == Box(40, 80, 160, 240)
    assert mapped.landmarks == [(48, 120), (596, 396)]
    assert mapped.quality.face_pixels == 120  # the box's shorter side, in the image's pixels
    [edge] = image.in_original([replace(face, box=Box(140, 90, 150, 100))])
    assert edge.box == Box(560, 360, 598, 400)  # clipped to the image


def test_decoding_for_analysis_keeps_twice_the_detection_side():
    settings = Settings(detect_max_side=1000)
    image = decode_for_analysis(encoded(striped(4000, 3000), "JPEG"), settings)
    assert image.scale == 2 and image.pixels.shape == (1500, 2000, 3)


# Memory ------------------------------------------------------------------------------------
# Peak memory of one decode, measured in a fresh interpreter that has imported the modules: for
# each file it forks a child, which resets the kernel's peak-resident-size mark (VmHWM) to its
# current size, decodes, and reports how far the mark rose. Nothing of the test process counts
# (getrusage's ru_maxrss would: Linux carries a parent's peak across fork and exec).

PEAK = """
def peak():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as marks:
        marks.write("5")
"""

PEAKS_SCRIPT = PEAK + """
import io, json, os, sys
from PIL import Image
from facesearch.imaging import decode

def small(fmt, mode="RGB"):
    out = io.BytesIO()
    Image.new(mode, (8, 8)).save(out, fmt)
    return out.getvalue()

# A child maps the libraries' code but has none of it resident until it runs it: decoding a small
# image of every kind first keeps that out of the measurement.
WARM = [small(fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP")] + [small("PNG", "RGBA"), b"?"]
for path, kwargs in json.loads(sys.stdin.read()):
    data = open(path, "rb").read()
    read, write = os.pipe()
    if os.fork() == 0:
        for warm in WARM:
            try:
                decode(warm, max_pixels=64, max_bytes=1 << 20)
            except Exception:
                pass
        reset_peak()
        before = peak()
        try:
            decode(data, **kwargs)
        except Exception:
            pass
        os.write(write, str(peak() - before).encode())
        os._exit(0)
    os.close(write)
    print(int(os.read(read, 100)))
    os.wait()
"""

MB = 1024 * 1024


def peaks(jobs: list[tuple[Path, dict]]) -> list[int]:
    """The peak memory of decoding each file with those arguments (over LIMITS), in bytes."""
    order = json.dumps([(str(path), {**LIMITS, **kwargs}) for path, kwargs in jobs])
    done = subprocess.run([sys.executable, "-c", PEAKS_SCRIPT], input=order, capture_output=True,
                          text=True, timeout=300, check=True)
    return [int(line) for line in done.stdout.split()]


@pytest.fixture(scope="module")
def corpus_peaks(tmp_path_factory) -> dict[str, int]:
    folder = tmp_path_factory.mktemp("corpus")
    for sample in corpus():
        (folder / sample.name).write_bytes(sample.data)
    found = peaks([(folder / sample.name, {"reduce_to": 3200}) for sample in corpus()])
    return {sample.name: peak for sample, peak in zip(corpus(), found)}


@pytest.mark.parametrize("sample", corpus(), ids=lambda s: s.name)
def test_no_hostile_file_costs_more_memory_than_its_decoded_pixels_allow(sample, corpus_peaks):
    peak = corpus_peaks[sample.name]
    if sample.refusal is not None:
        assert peak < 4 * MB, f"{sample.name} cost {peak / MB:.0f} MB before it was refused"
    else:
        width, height = sample.size
        assert peak <= 8 * width * height + 4 * MB, f"{sample.name}: {peak / MB:.0f} MB"


SIDE = (3000, 2000)  # 6 megapixels: large enough that bytes per pixel, not overheads, show
HEAVY_KINDS = ["png-rgba", "png-16-bit", "png-palette-transparent", "gif", "bmp", "jpeg-rotated",
               "jpeg-progressive-cmyk", "webp"]


def heavy_files(folder: Path) -> dict[str, tuple[Path, int]]:
    """Large legitimate images of each costly kind, and the bytes per pixel each may use."""
    width, height = SIDE
    image = striped(width, height)
    rotated = Image.Exif()
    rotated[0x0112] = 8
    made = {
        "png-rgba": (png_declaring(width, height, colour_type=6, rows=-1), 8),
        "png-16-bit": (png_declaring(width, height, depth=16, rows=-1), 8),
        "png-palette-transparent": (encoded(image.convert("P"), "PNG", transparency=0), 8),
        "gif": (encoded(image.convert("P"), "GIF"), 8),
        "bmp": (encoded(image, "BMP"), 8),
        "jpeg-rotated": (encoded(image, "JPEG", exif=rotated), 8),
        "jpeg-progressive-cmyk": (encoded(image.convert("CMYK"), "JPEG", progressive=True), 12),
        "webp": (encoded(image, "WEBP", quality=50), DECODE_BYTES_PER_PIXEL),
    }
    for name, (data, _) in made.items():
        (folder / name).write_bytes(data)
    return {name: (folder / name, per_pixel) for name, (_, per_pixel) in made.items()}


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    return heavy_files(tmp_path_factory.mktemp("heavy"))


@pytest.fixture(scope="module")
def heavy_peaks(heavy) -> dict[str, int]:
    """Each heavy file at full resolution (the bound holds without reduction), and the JPEG
    reduced to a quarter on each side."""
    found = peaks([(heavy[kind][0], {}) for kind in HEAVY_KINDS]
                  + [(heavy["jpeg-rotated"][0], {"reduce_to": 700})])
    return dict(zip([*HEAVY_KINDS, "jpeg-reduced"], found))


@pytest.mark.parametrize("kind", HEAVY_KINDS)
def test_a_decode_at_full_resolution_stays_within_the_stated_bound(heavy, heavy_peaks, kind):
    per_pixel, pixels = heavy[kind][1], SIDE[0] * SIDE[1]
    assert per_pixel <= DECODE_BYTES_PER_PIXEL
    assert heavy_peaks[kind] <= per_pixel * pixels + DECODE_SLACK_BYTES // 4, (
        f"{kind}: {heavy_peaks[kind] / pixels:.1f} bytes a pixel, over {per_pixel}")


def test_a_large_jpeg_decoded_reduced_costs_a_fraction_of_a_full_decode(heavy_peaks):
    assert 0 < heavy_peaks["jpeg-reduced"] < heavy_peaks["jpeg-rotated"] / 4


CONCURRENT_SCRIPT = PEAK + """
import sys, threading
from facesearch.imaging import decode
data = open(sys.argv[1], "rb").read()
before = peak()
start = threading.Barrier(4)
def one():
    start.wait()
    decode(data, max_pixels=50_000_000, max_bytes=1 << 30, concurrency=int(sys.argv[2]))
threads = [threading.Thread(target=one) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(peak() - before)
"""


def test_simultaneous_decodes_wait_their_turn_so_memory_does_not_multiply(heavy):
    path, per_pixel = heavy["png-rgba"]
    peaks = {}
    for slots in (1, 4):
        done = subprocess.run([sys.executable, "-c", CONCURRENT_SCRIPT, str(path), str(slots)],
                              capture_output=True, text=True, timeout=120, check=True)
        peaks[slots] = int(done.stdout)
    one_decode = per_pixel * SIDE[0] * SIDE[1] + DECODE_SLACK_BYTES // 4
    result = 3 * SIDE[0] * SIDE[1]  # the caller's: a result outlives its decode's turn briefly
    assert peaks[1] <= one_decode + result
    assert peaks[4] > 2 * peaks[1]  # what the bound prevents


def test_decodes_beyond_the_bound_wait(monkeypatch):
    running, most, lock = 0, 0, threading.Lock()
    real = imaging._decode

    def slow(*args):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return real(*args)

    monkeypatch.setattr(imaging, "_decode", slow)
    data = noise_jpeg()
    threads = [threading.Thread(target=decode, args=(data,), kwargs={**LIMITS, "concurrency": 3})
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 3


def test_a_jpeg_with_more_scans_than_any_encoder_writes_is_refused_before_decoding():
    """Each scan of a progressive JPEG is a pass over the whole image: thousands of them in a
    small file would hold a core for minutes."""
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        out, "JPEG", progressive=True)
    ordinary = out.getvalue()
    assert 2 < ordinary.count(b"\xff\xda") <= MAX_JPEG_SCANS
    assert decode(ordinary, **LIMITS).width == 64
    many = ordinary[:-2] + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" * 500 + b"\xff\xd9"
    assert refusal(many) == f"JPEG has more than {MAX_JPEG_SCANS} scans"
