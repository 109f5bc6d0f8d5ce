"""Error rates by demographic group at one operating cut-off, as NIST's FRVT/FRTE demographic
reports give them (Grother et al., NISTIR 8280): per group, the false-match rate among pairs of
different people of that group, and the ratio of the worst group's rate to the best's.

Operating cut-off: the distance at which the embedder's LFW calibration gives a fixed
false-match probability (1e-3 unless asked otherwise), so that every embedder is compared at
the same nominal false-match rate; a group's measured rate above it says how much more often
that group's strangers are confused than LFW's.

- FairFace (validation set: every photo a different person): per race, gender and age group,
  every pair of different photos of the group is an impostor pair.
- LFW with its gender labels: per gender, at most PER_PERSON photos a person (the first by
  name, so that a few much-photographed people do not dominate); genuine pairs are all pairs of
  one person's photos, impostor pairs all pairs of photos of two different people of that gender
  (not View 2's pairs: its 3,000 impostor pairs hold too few of women to measure 1e-3). The face
  is the one nearest the photo's centre, as eval lfw takes it (and from its cache, when a whole
  run finds one in the output folder).
Photos where no face is found are left out of the pairs and counted per group; a FairFace
photo's face is its largest. Each pair is described as a search meets it: the first photo as a
probe, the second as a gallery face.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from facesearch.calibration import load_calibration
from facesearch.config import Settings
from facesearch.vision import embedder_name
from facesearch.evaluation.lfw import cache_path, describe_all, list_images
from facesearch.evaluation.pipeline import PhotoFaces, PhotoJob, run_photos

PER_PERSON = 10
DIMENSIONS = ("race", "gender", "age")
BLOCK = 1024  # probe rows per distance block


def pair_counts(probes: np.ndarray, gallery: np.ndarray, people: np.ndarray,
                cutoff: float) -> dict[str, int]:
    """Over all pairs i < j: genuine (same person) and impostor pairs, and how many of each lie
    within cutoff (distance under it, as a search's cut-off admits)."""
    counts = {"genuine": 0, "genuine_within": 0, "impostor": 0, "impostor_within": 0}
    n = len(probes)
    for start in range(0, n, BLOCK):
        block = probes[start:start + BLOCK]
        d2 = (block**2).sum(1)[:, None] - 2 * block @ gallery.T + (gallery**2).sum(1)[None]
        within = np.sqrt(np.maximum(d2, 0.0)) < cutoff
        upper = np.arange(n)[None, :] > np.arange(start, start + len(block))[:, None]
        same = people[start:start + len(block), None] == people[None, :]
        counts["genuine"] += int((upper & same).sum())
        counts["genuine_within"] += int((upper & same & within).sum())
        counts["impostor"] += int((upper & ~same).sum())
        counts["impostor_within"] += int((upper & ~same & within).sum())
    return counts


def worst_to_best(rates: dict[str, float], pairs: dict[str, int], min_pairs: int) -> dict:
    """The worst group's rate over the best's, among groups with at least min_pairs pairs (a
    smaller group cannot show the rate asked about). A best rate of zero (no error among its
    pairs) is floored at one error in its pairs, so the ratio is then a lower bound. ratio is
    None when fewer than two groups have enough pairs."""
    compared = {g: r for g, r in rates.items() if pairs[g] >= min_pairs}
    result: dict = {"min_pairs": min_pairs, "too_few_pairs": sorted(set(rates) - set(compared))}
    if len(compared) < 2:
        return {**result, "worst": None, "best": None, "ratio": None, "best_floored_at_one_error": False}
    worst = max(compared, key=compared.__getitem__)
    best = min(compared, key=compared.__getitem__)
    floored = compared[best] == 0
    denominator = 1 / pairs[best] if floored else compared[best]
    return {**result, "worst": worst, "best": best, "ratio": compared[worst] / denominator,
            "best_floored_at_one_error": floored}


def read_fairface(folder: Path, limit: int | None) -> list[dict]:
    with open(folder / "labels.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return rows[:limit] if limit else rows


def read_lfw_gender(lfw_dir: Path, limit_people: int | None) -> list[tuple[str, str, str]]:
    """(photo path, person, gender) of the labelled photos, PER_PERSON a person at most."""
    labels: dict[str, str] = {}
    both: set[str] = set()
    for gender in ("male", "female"):
        for name in (lfw_dir / "gender" / f"{gender}_names.txt").read_text().split():
            if name in labels:
                both.add(name)  # in both lists: unlabelled (gender/SOURCE.md)
            labels[name] = gender
    people = sorted(p.name for p in (lfw_dir / "images").iterdir() if p.is_dir())
    people = people[:limit_people] if limit_people else people
    photos = []
    for person in people:
        named = sorted((lfw_dir / "images" / person).glob("*.jpg"))
        labelled = [p for p in named if p.name in labels and p.name not in both]
        photos.extend((str(p), person, labels[p.name]) for p in labelled[:PER_PERSON])
    return photos


def _vectors(described: list[PhotoFaces], mirror: bool) -> np.ndarray:
    return np.stack([d.vectors[mirror][0] for d in described])  # the largest face


def run_demographics(settings: Settings, fairface_dir: Path, lfw_dir: Path, output: Path,
                     log: Callable[[str], None], false_match_probability: float = 1e-3,
                     limit: int | None = None) -> dict:
    """limit: only the first that many FairFace photos and LFW people (a quick run)."""
    calibration = load_calibration(embedder_name(settings.embedder))
    cutoff = calibration.distance_at(false_match_probability)
    # Enough pairs to expect one false match at the nominal rate.
    min_pairs = int(np.ceil(1 / false_match_probability))
    fairface = read_fairface(fairface_dir, limit)
    mirrors = tuple(sorted({settings.mirror_probe, settings.mirror_gallery}))
    jobs = [PhotoJob(str(fairface_dir / row["file"]), mirrors) for row in fairface]
    described, throughput = run_photos(settings, jobs, log, "FairFace photos")
    lfw = read_lfw_gender(lfw_dir, limit)
    lfw_faces = _lfw_descriptors(settings, lfw_dir, [path for path, _, _ in lfw], output,
                                 limit is None, log)
    report: dict = {
        "embedder": embedder_name(settings.embedder), "detector": settings.detector,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "operating_point": {
            "false_match_probability": false_match_probability, "cutoff": round(cutoff, 4),
            "how": f"the distance at which the {settings.embedder} LFW calibration "
                   f"({calibration.pairs} impostor pairs) gives a false-match probability of "
                   f"{false_match_probability:g}; a pair within it (distance under it) is a match",
        },
        "ratio": f"worst group's rate / best group's (NIST NISTIR 8280), among groups with at "
                 f"least {min_pairs} pairs (1 / the false-match probability)",
        "fairface": _fairface(fairface, described, settings, cutoff, min_pairs),
        "lfw_gender": _lfw_gender(lfw, lfw_faces, settings, cutoff, min_pairs),
        **throughput.as_dict(),
    }
    race = report["fairface"]["race"]
    report["headline"] = {"measure": "FairFace false-match rate by race, worst group / best",
                          "ratio": race["ratio"] and round(race["ratio"], 2), "worst": race["worst"],
                          "best": race["best"]}
    output.mkdir(parents=True, exist_ok=True)
    stem = f"demographics-{re.sub(r'[^A-Za-z0-9._-]+', '_', settings.embedder)}"
    report["written"] = [str(output / f"{stem}.json"), str(output / f"{stem}.png")]
    (output / f"{stem}.json").write_text(json.dumps(report, indent=2))
    _plot(report, output / f"{stem}.png")
    return report


def _fairface(rows: list[dict], described: list[PhotoFaces], settings: Settings,
              cutoff: float, min_pairs: int) -> dict:
    result: dict = {"photos": len(rows), "no_face": sum(not d.found for d in described),
                    "pairs": "every pair of different photos within the group (each photo a "
                             "different person): impostor pairs only"}
    for dimension in DIMENSIONS:
        groups: dict[str, dict] = {}
        for group in sorted({row[dimension] for row in rows}, key=_in_order):
            members = [d for row, d in zip(rows, described) if row[dimension] == group]
            faces = [d for d in members if d.found]
            entry = {"photos": len(members), "no_face": len(members) - len(faces),
                     "pairs": 0, "false_matches": 0, "false_match_rate": 0.0}
            if len(faces) >= 2:
                counts = pair_counts(_vectors(faces, settings.mirror_probe),
                                     _vectors(faces, settings.mirror_gallery),
                                     np.arange(len(faces)), cutoff)
                entry.update(pairs=counts["impostor"], false_matches=counts["impostor_within"],
                             false_match_rate=counts["impostor_within"] / counts["impostor"])
            groups[group] = entry
        result[dimension] = {"groups": groups, **worst_to_best(
            {g: e["false_match_rate"] for g, e in groups.items()},
            {g: e["pairs"] for g, e in groups.items()}, min_pairs)}
    return result


def _in_order(group: str) -> tuple[int, str]:
    """Age groups by their first year ("3-9" before "10-19"), other groups by name."""
    number = re.search(r"\d+", group)
    return (int(number.group()) if number else -1, group)


def _lfw_descriptors(settings: Settings, lfw_dir: Path, paths: list[str], output: Path,
                     whole: bool, log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The central face of each photo (LFW's subject), as eval lfw describes it; a whole run
    reads and fills eval lfw's cache of every LFW photo in output."""
    relative = [str(Path(p).relative_to(lfw_dir / "images")) for p in paths]
    if not whole:
        return describe_all(settings, lfw_dir, relative, None, log)
    every, _ = list_images(lfw_dir)
    described = describe_all(settings, lfw_dir, every, cache_path(settings, output), log)
    position = {p: i for i, p in enumerate(every)}
    rows = np.array([position[p] for p in relative], dtype=np.int64)
    return {key: described[key][rows] for key in ("plain", "mirrored", "found")}


def _lfw_gender(photos: list[tuple[str, str, str]], described: dict[str, np.ndarray],
                settings: Settings, cutoff: float, min_pairs: int) -> dict:
    groups: dict[str, dict] = {}
    probe = described["mirrored" if settings.mirror_probe else "plain"]
    gallery = described["mirrored" if settings.mirror_gallery else "plain"]
    for gender in ("female", "male"):
        member = np.array([g == gender for _, _, g in photos])
        faces = member & described["found"]
        names = [person for (_, person, _), face in zip(photos, faces) if face]
        people = np.unique(names, return_inverse=True)[1]
        entry: dict = {"photos": int(member.sum()),
                       "people": len({person for (_, person, g) in photos if g == gender}),
                       "no_face": int(member.sum() - faces.sum())}
        if faces.sum() >= 2:
            counts = pair_counts(probe[faces], gallery[faces], people, cutoff)
            entry.update({
                "genuine_pairs": counts["genuine"], "impostor_pairs": counts["impostor"],
                "false_non_match_rate": (1 - counts["genuine_within"] / counts["genuine"]
                                         if counts["genuine"] else None),
                "false_match_rate": counts["impostor_within"] / counts["impostor"] if counts["impostor"] else None,
            })
        groups[gender] = entry
    result: dict = {"pairs": f"all pairs within each gender, at most {PER_PERSON} photos a person: "
                             "genuine = same person, impostor = two different people",
                    "groups": groups}
    for rate, pairs in (("false_non_match_rate", "genuine_pairs"), ("false_match_rate", "impostor_pairs")):
        measured = {g: e for g, e in groups.items() if e.get(rate) is not None}
        result[rate] = worst_to_best({g: e[rate] for g, e in measured.items()},
                                     {g: e[pairs] for g, e in measured.items()}, min_pairs)
    return result


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5), gridspec_kw={"width_ratios": [7, 2, 9, 2]})
    floor = 1e-6  # a group with no false match is drawn at the axis' floor
    point = report["operating_point"]
    for ax, dimension in zip(axes, DIMENSIONS):
        groups = report["fairface"][dimension]["groups"]
        names = list(groups)
        ax.bar(names, [max(groups[g]["false_match_rate"], floor) for g in names])
        ax.axhline(point["false_match_probability"], color="grey", linestyle="--")
        ax.set_yscale("log")
        ratio = report["fairface"][dimension]["ratio"]
        ax.set_title(f"FairFace FMR by {dimension}" + (f" (worst/best {ratio:.1f})" if ratio else ""))
        ax.tick_params(axis="x", rotation=45)
    lfw = report["lfw_gender"]["groups"]
    genders = [g for g in lfw if "false_match_rate" in lfw[g]]
    x = np.arange(len(genders))
    axes[3].bar(x - 0.2, [max(lfw[g]["false_match_rate"], floor) for g in genders], 0.4, label="FMR")
    axes[3].bar(x + 0.2, [max(lfw[g]["false_non_match_rate"] or 0, floor) for g in genders], 0.4, label="FNMR")
    axes[3].set_xticks(x, genders)
    axes[3].set_yscale("log")
    axes[3].set_title("LFW by gender")
    axes[3].legend()
    fig.suptitle(f"{report['embedder']} + {report['detector']}: error rates at cut-off {point['cutoff']} "
                 f"(calibrated false-match probability {point['false_match_probability']:g}; dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
