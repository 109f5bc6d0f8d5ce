"""Face analysis on the CPU and on a CUDA GPU side by side, measured in one run.

images/s of FaceAnalyzer.analyse, what an ingest worker runs on each photo (YuNet detection,
alignment, the face chip, SFace descriptors; ingest's mirror setting), over the same fixed
sample of decoded LFW photos; decoding is not timed.
- cpu: one process, one thread (OpenCV's FaceDetectorYN, ONNX Runtime with one thread), one
  photo at a time, as an ingest worker runs.
- cuda: FACESEARCH_DEVICE=cuda (YuNet and SFace on ONNX Runtime's CUDA provider), photos
  handed over in groups of --batch and their faces described in batches of --batch. Its
  descriptors are compared with the CPU's.
Where ONNX Runtime has no CUDA provider, the cuda line says so and the CPU figures still print.

Usage: bash bench/gpu.sh [--images 500] [--batch 32]
"""

from __future__ import annotations

import argparse
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LFW = ROOT.parent / "shared" / "datasets" / "lfw"


def sample(count: int) -> tuple[list[np.ndarray], int]:
    """Every k-th LFW photo in name order (a fixed sample), decoded; and k."""
    from facesearch.config import Settings
    from facesearch.imaging import decode_for_analysis

    files = sorted((LFW / "images").glob("*/*.jpg"))
    step = max(1, len(files) // count)
    settings = Settings()
    return [decode_for_analysis(f.read_bytes(), settings).pixels
            for f in files[::step][:count]], step


def providers(analyzer) -> str:  # noqa: ANN001 - FaceAnalyzer
    """The execution providers ONNX Runtime actually gave the detector and the embedder."""
    detector = analyzer.detector.model
    found = {"detector": detector.session.get_providers()[0] if hasattr(detector, "session")
             else "OpenCV DNN", "embedder": analyzer.embedder.model[0].get_providers()[0]}
    return ", ".join(f"{role} on {name}" for role, name in found.items())


def run(device: str, photos: list[np.ndarray], group: int) -> tuple[float, list, str]:
    """images/s, the faces of every photo, and where the models ran."""
    from facesearch.config import Settings
    from facesearch.vision import FaceAnalyzer

    settings = Settings(detector="yunet", embedder="sface", device=device,
                        embed_batch=max(group, Settings().embed_batch))
    analyzer = FaceAnalyzer(settings)
    analyzer.analyse(photos[:group], settings.mirror_gallery)  # loads the models, warms CUDA
    started = time.perf_counter()
    faces = []
    for start in range(0, len(photos), group):
        faces.extend(analyzer.analyse(photos[start:start + group], settings.mirror_gallery))
    return len(photos) / (time.perf_counter() - started), faces, providers(analyzer)


def largest_difference(a: list, b: list) -> tuple[float, int]:
    """The largest descriptor difference between two runs over the photos where both found
    the same number of faces (faces come largest first), and how many photos differ in it."""
    worst, mismatched = 0.0, 0
    for faces_a, faces_b in zip(a, b):
        if len(faces_a) != len(faces_b):
            mismatched += 1
            continue
        for fa, fb in zip(faces_a, faces_b):
            worst = max(worst, float(np.abs(fa.embedding - fb.embedding).max()))
    return worst, mismatched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="LFW photos in the sample")
    parser.add_argument("--batch", type=int, default=32, help="photos and chips per CUDA batch")
    args = parser.parse_args()

    import cv2
    import onnxruntime as ort

    try:
        gpu_package = f"onnxruntime-gpu {metadata.version('onnxruntime-gpu')} installed"
    except metadata.PackageNotFoundError:
        gpu_package = "onnxruntime-gpu not installed"
    print(f"onnxruntime {ort.__version__}; {gpu_package}; providers: "
          f"{', '.join(ort.get_available_providers())}")
    photos, step = sample(args.images)
    print(f"{len(photos)} LFW photos (every {step}th), yunet + sface, detect + align + describe")

    cv2.setNumThreads(1)
    cpu_rate, cpu_faces, where = run("cpu", photos, 1)
    print(f"cpu (1 process, 1 thread; {where}): {sum(map(len, cpu_faces))} faces, "
          f"{cpu_rate:.1f} images/s")

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("cuda: not available (onnxruntime has no CUDAExecutionProvider)")
        return
    from facesearch.errors import FacesearchError

    try:
        cuda_rate, cuda_faces, where = run("cuda", photos, args.batch)
    except FacesearchError as exc:
        print(f"cuda: not available ({exc})")
        return
    worst, mismatched = largest_difference(cpu_faces, cuda_faces)
    print(f"cuda (batch {args.batch}; {where}): {sum(map(len, cuda_faces))} faces, "
          f"{cuda_rate:.1f} images/s = {cuda_rate / cpu_rate:.1f}x cpu; descriptors differ "
          f"from cpu's by at most {worst:.1e} ({mismatched} photos with other face counts)")


if __name__ == "__main__":
    main()
