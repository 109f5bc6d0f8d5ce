"""ONNX models: YuNet detection through OpenCV, and any face embedder that a manifest describes,
on ONNX Runtime (CPU, or CUDA with settings.device). SFace ships as the built-in manifest
data/models/sface.json; an operator licensed to a stronger model writes a manifest for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from facesearch.errors import FacesearchError, InvalidRequest
from facesearch.types import Box, Detection
from facesearch.vision.base import AlignedFace, Detector, Embedder
from facesearch.vision.chips import similarity, warp
from facesearch.vision.registry import model_path, verified

YUNET_SCORE = 0.7  # YuNet's confidence below which a detection is dropped
YUNET_NMS = 0.3


class YuNetDetector(Detector):
    """OpenCV Zoo's YuNet through cv2.FaceDetectorYN: faces from about 10 px, turned faces,
    and five landmarks, at the photo's own resolution (bounded by detect_max_side). It needs
    no upsampling, so the upsample passes are ignored."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__()
        self.model_dir = model_dir

    def _load(self):  # noqa: ANN202 - cv2.FaceDetectorYN
        import cv2

        # Errors only: OpenCV 5 warns about DNN targets on every load.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        return cv2.FaceDetectorYN.create(str(model_path("yunet", self.model_dir)), "", (320, 320),
                                         YUNET_SCORE, YUNET_NMS, 5000)

    def detect(self, pixels: np.ndarray, upsample: int) -> list[Detection]:
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        height, width = pixels.shape[:2]
        self.model.setInputSize((width, height))
        _, found = self.model.detect(np.ascontiguousarray(pixels[:, :, ::-1]))  # it wants BGR
        detections = []
        for row in found if found is not None else []:
            x, y, w, h = (float(v) for v in row[:4])
            points = tuple((float(row[4 + 2 * i]), float(row[5 + 2 * i])) for i in range(5))
            detections.append(Detection(Box(int(round(x)), int(round(y)), int(round(x + w)),
                                            int(round(y + h))), float(row[14]), points))
        return detections


@dataclass(frozen=True)
class Manifest:
    """What facesearch needs to know to run an ONNX face embedder."""

    name: str  # recorded with every descriptor it makes
    file: Path
    sha256: str
    input_size: int  # square chip side, pixels
    colour: str  # "RGB" or "BGR"
    mean: tuple[float, float, float]  # per channel, subtracted from 0-255 values
    std: tuple[float, float, float]  # then divided by
    template: np.ndarray  # five landmark positions in the chip (ArcFace order)
    dimension: int
    licence: str

    @classmethod
    def from_file(cls, path: Path, model_dir: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"cannot read the model manifest {path}: {exc}") from None
        return cls.from_dict(data, path.parent, model_dir)

    @classmethod
    def from_dict(cls, data: dict, base: Path, model_dir: Path) -> "Manifest":
        """base: the folder a relative "file" is in. A built-in manifest names a registered
        "model" instead, whose file and hash the registry holds."""
        required = {"name", "input_size", "colour", "mean", "std", "template", "dimension", "licence"}
        missing = sorted(required - data.keys()) + ([] if "model" in data or {"file", "sha256"} <= data.keys()
                                                    else ["file and sha256"])
        if missing:
            raise InvalidRequest(f"model manifest lacks {', '.join(missing)}")
        if data["colour"] not in ("RGB", "BGR"):
            raise InvalidRequest("manifest colour must be RGB or BGR")
        template = np.asarray(data["template"], dtype=np.float64)
        if template.shape != (5, 2):
            raise InvalidRequest("manifest template must be five [x, y] points")
        if "model" in data:
            file, sha256 = model_path(data["model"], model_dir), ""
        else:
            file, sha256 = (base / data["file"]).resolve(), str(data["sha256"]).lower()
            if len(sha256) != 64 or set(sha256) - set("0123456789abcdef"):
                raise InvalidRequest("manifest sha256 must be the model file's 64 hex digits")
        return cls(name=str(data["name"]), file=file, sha256=sha256,
                   input_size=int(data["input_size"]), colour=data["colour"],
                   mean=tuple(map(float, data["mean"])), std=tuple(map(float, data["std"])),
                   template=template, dimension=int(data["dimension"]), licence=str(data["licence"]))


def builtin_manifest(name: str, model_dir: Path) -> Manifest:
    data = json.loads(resources.files("facesearch").joinpath(f"data/models/{name}.json").read_text())
    return Manifest.from_dict(data, Path("."), model_dir)


def onnx_session(path: Path, device: str):  # noqa: ANN201 - onnxruntime.InferenceSession
    """An ONNX Runtime session for the model at path, one intra-op thread on the CPU (worker
    processes are the parallelism), or on CUDA. Graph inputs that no node consumes are pruned
    first: OpenCV Zoo's int8 SFace lists its weights as graph inputs, which ONNX Runtime would
    otherwise demand to be fed. The input's sizes are then freed (_free_dimensions), so that
    YuNet takes any image size and embedders take batches."""
    import onnx
    import onnxruntime as ort

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    consumed = {name for node in graph.node for name in node.input}
    initialisers = {i.name for i in graph.initializer}
    keep = [i for i in graph.input if i.name in consumed and i.name not in initialisers]
    if len(keep) != len(graph.input):
        del graph.input[:]
        graph.input.extend(keep)
    if len(keep) != 1:
        raise FacesearchError(f"{path.name}: facesearch runs models with one input; "
                              f"this has {len(keep)}")
    _dequantize_weights(graph)
    _free_dimensions(graph)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the int8 graphs' constant-folding notes are not errors
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise FacesearchError("FACESEARCH_DEVICE=cuda, but this ONNX Runtime has no CUDA "
                                  "provider: install onnxruntime-gpu")
        if hasattr(ort, "preload_dlls"):  # 1.21+: CUDA and cuDNN from pip's nvidia-* wheels
            ort.preload_dlls()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(graph_model.SerializeToString(), options, providers=providers)
    # ONNX Runtime falls back to the CPU, with only a logged warning, when CUDA cannot start.
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise FacesearchError("FACESEARCH_DEVICE=cuda, but ONNX Runtime could not start CUDA "
                              "(its CUDA and cuDNN libraries are missing or not the ones it was "
                              "built for: pip install 'onnxruntime-gpu[cuda,cudnn]')")
    return session


def _free_dimensions(graph) -> None:  # noqa: ANN001 - onnx.GraphProto
    """Make the input's and outputs' sizes symbolic: OpenCV Zoo's files declare fixed ones
    (YuNet 640x640, SFace a batch of 1) that ONNX Runtime would enforce. The batch stays fixed
    where a Reshape of activations hard-codes its first dimension (YuNet's outputs are
    reshaped to [1, -1, n]), since a larger batch would be mixed up there; SFace has none."""
    from onnx import numpy_helper

    values = {t.name: t for t in graph.initializer}  # constant tensors whose values are known
    values.update((n.output[0], n.attribute[0].t) for n in graph.node
                  if n.op_type == "Constant" and n.attribute[0].name == "value")
    constant = set(values)  # and all that are computed from constants only
    fixed_batch = False
    for node in graph.node:  # topological order: a node's inputs are produced before it
        if node.op_type == "Constant" or all(i in constant for i in node.input if i):
            constant.update(node.output)
        elif node.op_type == "Reshape" and node.input[1] in constant:
            shape = values.get(node.input[1])
            fixed_batch |= shape is None or int(numpy_helper.to_array(shape)[0]) not in (0, -1)
    for value in list(graph.input) + list(graph.output):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if axis > 0 or not fixed_batch:
                dim.dim_param = f"{value.name}_{axis}" if axis else "batch"
    del graph.value_info[:]  # inferred for the declared sizes; ONNX Runtime infers them again


def _dequantize_weights(graph) -> None:  # noqa: ANN001 - onnx.GraphProto
    """Replace each DequantizeLinear of constant weights by its float result, computed once
    here: ONNX Runtime's CPU provider otherwise dequantizes the block-quantized weights of the
    int8 models on every run (measured 1.5x slower per face on SFace; same outputs to 2e-6)."""
    from onnx import helper, numpy_helper

    constants = {i.name: i for i in graph.initializer}
    kept = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type != "DequantizeLinear" or not all(name in constants for name in inputs):
            kept.append(node)
            continue
        values = numpy_helper.to_array(constants[inputs[0]]).astype(np.float32)
        scale = numpy_helper.to_array(constants[inputs[1]]).astype(np.float32)
        zero = (numpy_helper.to_array(constants[inputs[2]]).astype(np.float32)
                if len(inputs) > 2 else np.zeros_like(scale))
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis, block = attributes.get("axis", 1), attributes.get("block_size", 0)
        if block:  # one scale per block of `block` values along axis
            scale, zero = (np.repeat(v, block, axis=axis).take(range(values.shape[axis]), axis=axis)
                           for v in (scale, zero))
        elif scale.ndim == 1 and scale.size > 1:  # one scale per slice along axis
            shape = [1] * values.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        graph.initializer.append(numpy_helper.from_array((values - zero) * scale, node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)


class OnnxEmbedder(Embedder):
    """A face embedder described by a Manifest: aligns the five landmarks onto its template,
    normalises as it says, runs on ONNX Runtime."""

    def __init__(self, manifest: Manifest, device: str = "cpu") -> None:
        super().__init__()
        self.manifest = manifest
        self.name = manifest.name
        self.dimension = manifest.dimension
        self.device = device

    def _load(self):  # noqa: ANN202 - (session, input name, batch size or None if any)
        path = self.manifest.file
        if self.manifest.sha256:
            verified(path, self.manifest.sha256, self.manifest.name)
        session = onnx_session(path, self.device)
        spec = session.get_inputs()[0]
        # Batches for the GPU; on one CPU thread a batch of 16 SFace chips measured 6% slower
        # per chip than one chip a run.
        free = None if self.device == "cuda" else 1
        batch = spec.shape[0] if isinstance(spec.shape[0], int) else free
        return session, spec.name, batch

    def align(self, pixels: np.ndarray, detection: Detection) -> AlignedFace:
        if detection.landmarks is None:
            raise FacesearchError(f"{self.name} aligns from landmarks; the detection has none")
        size = self.manifest.input_size
        matrix = similarity(np.array(detection.landmarks), self.manifest.template)
        return AlignedFace(chip=warp(pixels, matrix, size), landmarks=list(detection.landmarks))

    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dimension), dtype=np.float32)
        session, input_name, batch = self.model
        x = np.stack(chips).astype(np.float32)  # chips are RGB
        if self.manifest.colour == "BGR":
            x = x[..., ::-1]
        x = (x - np.array(self.manifest.mean, np.float32)) / np.array(self.manifest.std, np.float32)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        step = batch or len(x)
        out = [session.run(None, {input_name: x[i:i + step]})[0] for i in range(0, len(x), step)]
        vectors = np.concatenate(out).reshape(len(x), -1).astype(np.float32)
        if vectors.shape[1] != self.dimension:
            raise FacesearchError(f"{self.name} gave {vectors.shape[1]} values, its manifest says "
                                  f"{self.dimension}")
        return vectors


class FusedEmbedder(Embedder):
    """Several embedders' unit-length descriptors, each scaled by the square root of its weight
    and concatenated: squared distances then add up with those weights."""

    def __init__(self, parts: list[Embedder], weights: list[float]) -> None:
        super().__init__()
        self.parts = parts
        self.weights = np.sqrt(np.asarray(weights, dtype=np.float32) / sum(weights))
        self.name = "fused"
        self.dimension = sum(p.dimension for p in parts)

    def _load(self) -> None:
        return None

    def align(self, pixels: np.ndarray, detection: Detection) -> AlignedFace:
        aligned = [p.align(pixels, detection) for p in self.parts]
        return AlignedFace(chip=tuple(a.chip for a in aligned), landmarks=aligned[-1].landmarks)

    def flip(self, chip):  # noqa: ANN001, ANN201 - a tuple of the parts' chips
        return tuple(p.flip(c) for p, c in zip(self.parts, chip))

    def describe(self, chips: list) -> np.ndarray:
        from facesearch.vision import unit_length

        if not chips:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate([unit_length(p.describe([c[i] for c in chips])) * w
                               for i, (p, w) in enumerate(zip(self.parts, self.weights))], axis=1)


class _OrtYuNet:
    """YuNet on ONNX Runtime behind cv2.FaceDetectorYN's two methods, so that YuNetDetector
    reads its rows unchanged. The decoding follows OpenCV's FaceDetectorYN: the image padded
    with zeros to multiples of 32, BGR as float 0-255 without normalisation; per grid cell of
    strides 8, 16 and 32 a score sqrt(cls * obj), a box centred at (cell + offset) * stride
    with sides exp(log size) * stride, five landmarks at (cell + offset) * stride; then the
    score threshold and non-maximum suppression on whole-pixel boxes, as OpenCV does."""

    STRIDES = (8, 16, 32)

    def __init__(self, session) -> None:  # noqa: ANN001 - onnxruntime.InferenceSession
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def setInputSize(self, size: tuple[int, int]) -> None:  # noqa: N802 - cv2's name
        """The input size comes from each image itself."""

    def detect(self, bgr: np.ndarray) -> tuple[int, np.ndarray | None]:
        import cv2

        height, width = bgr.shape[:2]
        pad_h, pad_w = -(-height // 32) * 32, -(-width // 32) * 32
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        blob[0, :, :height, :width] = bgr.transpose(2, 0, 1)
        names = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in self.STRIDES]
        out = dict(zip(names, self.session.run(names, {self.input_name: blob})))
        rows = []
        for stride in self.STRIDES:
            cls = np.clip(out[f"cls_{stride}"].reshape(-1), 0, 1)
            obj = np.clip(out[f"obj_{stride}"].reshape(-1), 0, 1)
            score = np.sqrt(cls * obj)
            cells = np.flatnonzero(score >= YUNET_SCORE)
            col = (cells % (pad_w // stride)).astype(np.float32)[:, None]
            row = (cells // (pad_w // stride)).astype(np.float32)[:, None]
            bbox = out[f"bbox_{stride}"].reshape(-1, 4)[cells]
            kps = out[f"kps_{stride}"].reshape(-1, 5, 2)[cells]
            w, h = np.exp(bbox[:, 2:3]) * stride, np.exp(bbox[:, 3:4]) * stride
            x = (col + bbox[:, 0:1]) * stride - w / 2
            y = (row + bbox[:, 1:2]) * stride - h / 2
            points = np.stack([(kps[:, :, 0] + col) * stride, (kps[:, :, 1] + row) * stride], 2)
            rows.append(np.hstack([x, y, w, h, points.reshape(-1, 10), score[cells, None]]))
        faces = np.concatenate(rows).astype(np.float32)
        if len(faces) > 1:
            boxes = [[int(v) for v in face[:4]] for face in faces]  # OpenCV truncates too
            keep = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), YUNET_SCORE, YUNET_NMS,
                                    top_k=5000)
            faces = faces[np.asarray(keep, dtype=int).reshape(-1)]
        return 1, faces if len(faces) else None


class YuNetOrtDetector(YuNetDetector):
    """YuNet on ONNX Runtime: the same model file and the same detections as YuNetDetector,
    for a CUDA device, which OpenCV's pip wheel cannot use."""

    def __init__(self, model_dir: Path, device: str) -> None:
        super().__init__(model_dir)
        self.device = device

    def _load(self) -> _OrtYuNet:
        return _OrtYuNet(onnx_session(model_path("yunet", self.model_dir), self.device))
