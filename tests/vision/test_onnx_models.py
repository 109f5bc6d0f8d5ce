"""YuNet, SFace (built in and through a manifest), the fused embedder, the model registry and
the face chip that re-embedding describes again: real models on real LFW faces."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from facesearch.config import Settings
from facesearch.errors import FacesearchError, InvalidRequest
from facesearch.imaging import decode
from facesearch.vision import FaceAnalyzer, make_detector, make_embedder
from facesearch.vision.onnx_models import onnx_session
from facesearch.vision.registry import MODELS, model_path, sha256_of
from tests.conftest import lfw_photos

LIMITS = {"max_pixels": 50_000_000, "max_bytes": 50_000_000}


def pixels(path) -> np.ndarray:
    return decode(path.read_bytes(), **LIMITS).pixels


@pytest.fixture(scope="module")
def sface() -> FaceAnalyzer:
    return FaceAnalyzer(Settings(detector="yunet", embedder="sface"))


def central(analyzer: FaceAnalyzer, array: np.ndarray, mirror: bool = False):
    faces = analyzer.analyse([array], mirror)[0]
    assert faces, "no face found"
    h, w = array.shape[:2]
    return min(faces, key=lambda f: abs((f.box.left + f.box.right) / 2 - w / 2)
               + abs((f.box.top + f.box.bottom) / 2 - h / 2))


def test_yunet_finds_a_face_with_five_landmarks_in_place(lfw) -> None:
    photo = pixels(lfw_photos("Tony_Blair")[0])
    found = make_detector("yunet", Settings()).detect(photo, 0)
    face = max(found, key=lambda d: d.box.width)
    assert face.score > 0.7 and len(face.landmarks) == 5
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lx < nx < rx and lx < rx  # eyes either side of the nose, image left first
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above the nose, above the mouth
    assert all(face.box.left <= x <= face.box.right and face.box.top <= y <= face.box.bottom
               for x, y in face.landmarks)


def test_yunet_finds_a_tilted_face_that_hog_misses(lfw) -> None:
    # Tilted 45 degrees: dlib's HOG looks for upright faces only.
    from PIL import Image

    for name in ("Tony_Blair", "Colin_Powell"):
        photo = np.asarray(Image.open(lfw_photos(name)[0]).rotate(45, expand=True,
                                                                   fillcolor=(128, 128, 128)))
        assert make_detector("hog").detect(photo, 1) == []
        assert make_detector("yunet", Settings()).detect(photo, 0)


def test_sface_keeps_one_person_closer_than_two(lfw, sface) -> None:
    bush = [central(sface, pixels(p)).embedding for p in lfw_photos("George_W_Bush")[:3]]
    others = [central(sface, pixels(lfw_photos(n)[0])).embedding
              for n in ("Colin_Powell", "Tony_Blair", "Gerhard_Schroeder")]
    assert bush[0].shape == (128,) and abs(np.linalg.norm(bush[0]) - 1) < 1e-5
    same = max(np.linalg.norm(bush[i] - bush[j]) for i in range(3) for j in range(i + 1, 3))
    different = min(np.linalg.norm(b - o) for b in bush for o in others)
    assert same < different - 0.1


def test_the_sface_graph_needs_its_weight_inputs_pruned(tmp_path) -> None:
    path = model_path("sface", Settings().model_dir)
    graph = onnx.load(str(path)).graph
    assert len(graph.input) > 1  # the weights are listed as graph inputs
    raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    chip = np.zeros((1, 3, 112, 112), np.float32)
    with pytest.raises(ValueError, match="Required inputs"):
        raw.run(None, {"data": chip})
    pruned = onnx_session(path, "cpu")
    assert [i.name for i in pruned.get_inputs()] == ["data"]
    assert pruned.run(None, {"data": chip})[0].shape == (1, 128)


def test_a_manifest_runs_sface_as_an_operator_model(lfw, tmp_path, sface) -> None:
    path = model_path("sface", Settings().model_dir)
    shutil.copy(path, tmp_path / "model.onnx")
    manifest = {"name": "operator-sface", "file": "model.onnx", "sha256": MODELS["sface"].sha256,
                "input_size": 112, "colour": "RGB", "mean": [0, 0, 0], "std": [1, 1, 1],
                "template": [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]],
                "dimension": 128, "licence": "Apache-2.0"}
    (tmp_path / "sface.json").write_text(json.dumps(manifest))
    operator = FaceAnalyzer(Settings(embedder=str(tmp_path / "sface.json")))
    assert operator.embedder.name == "operator-sface"
    photo = pixels(lfw_photos("Tony_Blair")[0])
    np.testing.assert_allclose(central(operator, photo).embedding, central(sface, photo).embedding,
                               atol=1e-5)
    # A manifest whose colour order is wrong gives other descriptors: the fields are used.
    (tmp_path / "bgr.json").write_text(json.dumps({**manifest, "colour": "BGR"}))
    bgr = FaceAnalyzer(Settings(embedder=str(tmp_path / "bgr.json")))
    assert np.linalg.norm(central(bgr, photo).embedding - central(sface, photo).embedding) > 0.05


def test_a_manifest_with_a_wrong_hash_or_fields_is_refused(tmp_path) -> None:
    shutil.copy(model_path("sface", Settings().model_dir), tmp_path / "model.onnx")
    base = {"name": "x", "file": "model.onnx", "sha256": "0" * 64, "input_size": 112,
            "colour": "RGB", "mean": [0, 0, 0], "std": [1, 1, 1],
            "template": [[0, 0]] * 5, "dimension": 128, "licence": "?"}
    (tmp_path / "m.json").write_text(json.dumps(base))
    embedder = make_embedder(str(tmp_path / "m.json"))
    with pytest.raises(FacesearchError, match="sha256"):
        embedder.describe([np.zeros((112, 112, 3), np.uint8)])
    (tmp_path / "m.json").write_text(json.dumps({**base, "sha256": ""}))  # no check: refused
    with pytest.raises(InvalidRequest, match="sha256"):
        make_embedder(str(tmp_path / "m.json"))
    (tmp_path / "m.json").write_text(json.dumps({**base, "colour": "YUV"}))
    with pytest.raises(InvalidRequest, match="colour"):
        make_embedder(str(tmp_path / "m.json"))
    (tmp_path / "m.json").write_text(json.dumps({**base, "name": "sface"}))
    with pytest.raises(InvalidRequest, match="built-in name"):
        make_embedder(str(tmp_path / "m.json"))


def test_an_altered_model_file_is_refused(tmp_path) -> None:
    original = model_path("yunet", Settings().model_dir)
    data = bytearray(original.read_bytes())
    data[-1] ^= 1
    (tmp_path / original.name).write_bytes(bytes(data))
    with pytest.raises(FacesearchError, match="expected"):
        model_path("yunet", tmp_path)
    with pytest.raises(FacesearchError, match="not installed"):
        model_path("sface", tmp_path / "empty")


def test_every_registered_model_is_installed_with_its_pinned_hash() -> None:
    for name, model in MODELS.items():
        assert sha256_of(model_path(name, Settings().model_dir)) == model.sha256
        assert model.licence and model.source.startswith("https://")


def test_the_fused_descriptor_joins_both_at_unit_length(lfw) -> None:
    fused = FaceAnalyzer(Settings(embedder="fused"))
    assert fused.embedder.dimension == 256
    face = central(fused, pixels(lfw_photos("Tony_Blair")[0]), mirror=True)
    assert face.embedding.shape == (256,)
    assert abs(np.linalg.norm(face.embedding) - 1) < 1e-5
    dlib_part, sface_part = face.embedding[:128], face.embedding[128:]
    assert np.linalg.norm(dlib_part) > 0.3 and np.linalg.norm(sface_part) > 0.3


@pytest.mark.parametrize("detector,embedder", [("yunet", "sface"), ("hog", "dlib-resnet"),
                                               ("yunet", "dlib-resnet")])
def test_a_stored_face_chip_describes_the_face_again(lfw, detector, embedder) -> None:
    # What re-embedding relies on: the chip and its geometry, not the photo, give the face's
    # descriptor again (within resampling), far closer than another photo of the person.
    analyzer = FaceAnalyzer(Settings(detector=detector, embedder=embedder))
    first, second = (central(analyzer, pixels(p)) for p in lfw_photos("George_W_Bush")[:2])
    chip = decode(first.chip_jpeg, **LIMITS).pixels
    again = analyzer.describe_chips([(chip, first.chip_geometry)], mirror=False)[0]
    assert np.linalg.norm(again - first.embedding) < 0.5 * np.linalg.norm(second.embedding - first.embedding)
    # A chip kept before geometry was recorded is detected again.
    legacy = analyzer.describe_chips([(chip, None)], mirror=False)[0]
    assert np.linalg.norm(legacy - first.embedding) < np.linalg.norm(second.embedding - first.embedding)


def test_weights_dequantized_at_load_give_the_int8_graphs_outputs() -> None:
    path = model_path("sface", Settings().model_dir)
    shipped = onnx.load(str(path))  # pruned of its weight inputs only
    graph = shipped.graph
    consumed = {name for node in graph.node for name in node.input}
    initialisers = {i.name for i in graph.initializer}
    keep = [i for i in graph.input if i.name in consumed and i.name not in initialisers]
    del graph.input[:]
    graph.input.extend(keep)
    assert any(node.op_type == "DequantizeLinear" for node in graph.node)
    as_shipped = ort.InferenceSession(shipped.SerializeToString(), providers=["CPUExecutionProvider"])
    folded = onnx_session(path, "cpu")
    chips = np.random.default_rng(0).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(folded.run(None, {"data": chips})[0],
                               as_shipped.run(None, {"data": chips})[0], atol=1e-4)
