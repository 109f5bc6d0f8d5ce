"""Measure the near-duplicate thresholds of service.grouping on LFW photos and print JSON.

    .venv/bin/python scripts/measure_near_duplicates.py [LFW_DIR]

Each photo is copied as a web page might show it: half the size, recompressed at JPEG quality
40, cropped by 10% (centred, from the bottom-right corner, from the left side) and mirrored.
Part 1 (400 photos chosen at random, seed 0): bits between each photo's whole-image pHash
and its copies', and between different photos. Part 2 (the first 8 photos of 30 people with at
least 8, seed 2, analysed by the default YuNet + SFace pipeline): how often service.grouping's
rule (same_photo) takes each kind of copy for the photo, and pairs of different photos for one.
"""

from __future__ import annotations

import io
import json
import random
import sys
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from facesearch.config import Settings
from facesearch.imaging import hash_bits_apart, perceptual_hashes
from facesearch.service.grouping import face_window_hash, same_photo


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    w, h = image.size
    return image.crop((int(w * box[0]), int(h * box[1]), int(w * box[2]), int(h * box[3])))


COPIES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resized": lambda im: im.resize((im.width // 2, im.height // 2), Image.LANCZOS),
    "recompressed": lambda im: jpeg(im, 40),
    "cropped_centre": lambda im: crop(im, (.05, .05, .95, .95)),
    "cropped_corner": lambda im: crop(im, (0, 0, .9, .9)),
    "cropped_side": lambda im: crop(im, (.1, 0, 1, 1)),
    "mirrored": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
}


def whole_hash(image: Image.Image) -> str:
    return perceptual_hashes(np.asarray(image))[0]


def whole_image_bits(photos: list[Path]) -> dict:
    copies: dict[str, list[int]] = {kind: [] for kind in COPIES}
    hashes = []
    for path in photos:
        image = Image.open(path).convert("RGB")
        hashes.append(whole_hash(image))
        for kind, make in COPIES.items():
            copies[kind].append(hash_bits_apart(hashes[-1], whole_hash(make(image))))
    others = [hash_bits_apart(a, b) for (pa, a), (pb, b) in combinations(zip(photos, hashes), 2)
              if pa != pb]
    return {"photos": len(photos),
            "copies": {kind: {"max": max(bits), "median": float(np.median(bits))}
                       for kind, bits in copies.items()},
            "different_photos": {"pairs": len(others), "min": min(others),
                                 "at_most_6": sum(b <= 6 for b in others)}}


def grouping_rule(photos: list[Path]) -> dict:
    from facesearch.vision import FaceAnalyzer

    analyzer = FaceAnalyzer(Settings(home=Path("/nonexistent")))

    def hashes(image: Image.Image) -> tuple[str, str | None] | None:
        pixels = np.asarray(image)
        faces = analyzer.analyse([pixels], False)[0]
        if not faces:
            return None
        return whole_hash(image), face_window_hash(faces[0].chip_jpeg, faces[0].chip_geometry)

    found: dict[str, list[bool]] = {kind: [] for kind in COPIES}
    originals = []
    for path in photos:
        image = Image.open(path).convert("RGB")
        original = hashes(image)
        if original is None:
            continue
        originals.append((path.parent.name, original))
        for kind, make in COPIES.items():
            copy = hashes(make(image))
            if copy is not None:
                found[kind].append(same_photo((original[0], copy[0]), [(original[1], copy[1])]))
    taken = [(a == b) for (a, x), (b, y) in combinations(originals, 2)
             if same_photo((x[0], y[0]), [(x[1], y[1])])]
    return {"photos": len(originals),
            "copies_found": {kind: round(float(np.mean(v)), 3) for kind, v in found.items()},
            "different_photo_pairs": len(originals) * (len(originals) - 1) // 2,
            "different_photos_taken_for_one": len(taken),
            "of_them_one_persons": sum(taken)}


def main(lfw: Path) -> None:
    people = sorted(p for p in (lfw / "images").iterdir() if p.is_dir())
    every = [f for p in people for f in sorted(p.glob("*.jpg"))]
    sample = sorted(random.Random(0).sample(every, 400))
    many = [p for p in people if len(list(p.glob("*.jpg"))) >= 8]
    chosen = random.Random(2).sample(many, 30)
    print(json.dumps({"whole_image_phash": whole_image_bits(sample),
                      "grouping_rule": grouping_rule(
                          [f for p in chosen for f in sorted(p.glob("*.jpg"))[:8]])}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else
         Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "lfw")
