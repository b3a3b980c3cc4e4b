"""Tiny stage models in the real on-disk layout and formats, for tests and the no-download route.

Each writer puts a model where ``models fetch`` puts the real one (``models_dir/owner/name``), with
the file names, formats, tensor names and shapes the production loaders read: ONNX graphs for the
orientation and quality models (built with the ``onnx`` package), torch checkpoints for the tagger,
FairFace, FLCM and RTS, and ModelScope ``configuration.json`` files. The networks are narrowed where
the loader reads widths from the weights (tagger, FairFace), full-size where the architecture is
fixed and small (FLCM), and written full-size at test time only where it is fixed and large (RTS).
Their outputs are chosen, not learned: a writer's arguments say what the model will answer.
:func:`write_full_size_stage_models` writes the same stages at their real sizes, random weights,
for timing (``bench/stages_bench.py``); the tests never write those.

:func:`write_tiny_stage_models` writes every stage that runs on this project's own runtimes; the
ModelScope pipelines that carry their own code or need timm (skin retouching, face fusion, human
parsing) and DamoFD (mmcv) have no tiny model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.stage_models import BY_NAME

#: Tags the tiny tagger knows; those in ``TINY_TAGS_PRESENT`` are what it sees in every image.
TINY_TAGS = ("1girl", "black_hair", "brown_eyes", "looking_at_viewer", "rating:safe", "short_hair", "smile", "solo")
TINY_TAGS_PRESENT = ("1girl", "black_hair", "brown_eyes", "rating:safe", "smile", "solo")


def _folder(models_dir: Path, name: str) -> Path:
    folder = BY_NAME[name].local_dir(Path(models_dir))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _configuration(folder: Path, task: str, pipeline: str, model: dict[str, Any] | None = None) -> None:
    """ModelScope's configuration.json; ``model`` only where ModelScope builds a model class from it
    (the FQA, FairFace and FLCM pipelines read their weight files themselves)."""
    config: dict[str, Any] = {"framework": "pytorch", "task": task, "pipeline": {"type": pipeline}}
    if model is not None:
        config["model"] = model
    (folder / "configuration.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _pooled_linear_onnx(path: Path, side: int, weight: np.ndarray, bias: np.ndarray, *, sigmoid: bool) -> Path:
    """An ONNX graph ``input (1,3,side,side) → channel means → linear [→ sigmoid] → output (1,K)``."""
    return _save_classifier(path, "tiny", [], [], "input", side, weight, bias, sigmoid=sigmoid, head="")


def _save_classifier(
    path: Path,
    name: str,
    nodes: list[Any],
    initializers: list[Any],
    features: str,
    side: int,
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    sigmoid: bool,
    head: str,
) -> Path:
    """Ends ``nodes`` with the head both stand-ins share and saves the checked graph.

    The graph: ``input (1,3,side,side)`` → ``nodes`` → ``features`` → channel means → linear
    (``{head}weight``, ``{head}bias``) [→ sigmoid] → ``output (1,K)``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    outputs = int(weight.shape[1])
    initializers = [
        *initializers,
        numpy_helper.from_array(np.asarray(weight, np.float32), f"{head}weight"),
        numpy_helper.from_array(np.asarray(bias, np.float32), f"{head}bias"),
    ]
    nodes = [
        *nodes,
        helper.make_node("GlobalAveragePool", [features], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", f"{head}weight", f"{head}bias"], ["logits" if sigmoid else "output"]),
    ]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["output"]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, outputs])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _resnet18_onnx(path: Path, side: int, outputs: int, bias: np.ndarray, *, sigmoid: bool, seed: int = 0) -> Path:
    """An ONNX ResNet-18 (11 M parameters, batch norm folded away): ``input (1,3,side,side) → output (1,K)``.

    A stand-in of realistic size and cost for ONNX models whose own architecture this project does
    not know (the weights are random; ``bias`` on the last layer chooses the answer).
    """
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    initializers: list[Any] = []

    def conv(x: str, inputs: int, out: int, kernel: int, stride: int, gain: float = 1.0) -> str:
        name = f"conv{len(initializers) // 2}"
        scale = gain * (2.0 / (inputs * kernel * kernel)) ** 0.5
        initializers.append(
            numpy_helper.from_array(
                (rng.standard_normal((out, inputs, kernel, kernel)) * scale).astype(np.float32), f"{name}.weight"
            )
        )
        initializers.append(numpy_helper.from_array(np.zeros(out, np.float32), f"{name}.bias"))
        pad = kernel // 2
        nodes.append(helper.make_node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], [name], kernel_shape=[kernel, kernel],
            strides=[stride, stride], pads=[pad] * 4))  # fmt: skip
        return name

    def relu(x: str) -> str:
        nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"]))
        return f"{x}.relu"

    x = relu(conv("input", 3, 64, 7, 2))
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, channels = "pool", 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage and not block else 1
            y = conv(relu(conv(x, channels, width, 3, stride)), width, width, 3, 1, gain=0.2)
            shortcut = conv(x, channels, width, 1, stride) if stride != 1 or channels != width else x
            nodes.append(helper.make_node("Add", [y, shortcut], [f"{y}.add"]))
            x, channels = relu(f"{y}.add"), width
    head_weight = (rng.standard_normal((channels, outputs)) * 0.01).astype(np.float32)
    return _save_classifier(
        path, "resnet18_stand_in", nodes, initializers, x, side, head_weight, bias, sigmoid=sigmoid, head="head."
    )


def write_rot_bgr(
    models_dir: Path, weight: np.ndarray | None = None, bias: Sequence[float] = (4, 0, 0, 0), *, full_size: bool = False
) -> Path:
    """``Cherrytest/rot_bgr/rot_bgr.onnx``: (1,3,224,224) → 4 logits from the input's channel means.

    By default it answers "upright" for every photo; ``weight`` (3×4, on the normalised BGR channel
    means) and ``bias`` choose other answers. ``full_size``: a random ResNet-18 stand-in instead
    (``weight`` unused; ``bias`` still decides).
    """
    folder = _folder(models_dir, "rot_bgr")
    if full_size:
        return _resnet18_onnx(folder / "rot_bgr.onnx", 224, 4, np.asarray(bias, np.float32), sigmoid=False)
    w = np.zeros((3, 4), np.float32) if weight is None else np.asarray(weight, np.float32)
    return _pooled_linear_onnx(folder / "rot_bgr.onnx", 224, w, np.asarray(bias, np.float32), sigmoid=False)


def write_fqa(
    models_dir: Path, weight: Sequence[float] = (0.0, 0.0, 0.0), bias: float = 0.0, *, full_size: bool = False
) -> Path:
    """``damo/cv_manual_face-quality-assessment_fqa``: ``model.onnx`` (1,3,112,112) → (1,1) and its config.

    The score is ``sigmoid(weight · mean RGB in [-1, 1] + bias)``: brighter faces score higher with a
    positive weight. ``full_size``: a random ResNet-18 stand-in instead (``weight`` unused).
    """
    folder = _folder(models_dir, "fqa")
    if full_size:
        _resnet18_onnx(folder / "model.onnx", 112, 1, np.array([bias], np.float32), sigmoid=True)
        _configuration(folder, "face-quality-assessment", "manual-face-quality-assessment-fqa")
        return folder
    _pooled_linear_onnx(
        folder / "model.onnx", 112, np.asarray(weight, np.float32).reshape(3, 1), np.array([bias], np.float32),
        sigmoid=True,
    )  # fmt: skip
    _configuration(folder, "face-quality-assessment", "manual-face-quality-assessment-fqa")
    return folder


def write_deepdanbooru(
    models_dir: Path,
    tags: Sequence[str] = TINY_TAGS,
    present: Sequence[str] = TINY_TAGS_PRESENT,
    width: float = 1 / 32,
    seed: int = 0,
    residual_gain: float = 1.0,
) -> Path:
    """``ly261666/cv_portrait_model/model-resnet_custom_v3.pt``: DeepDanbooru's 179 convolutions, narrowed.

    The head answers yes (probability > 0.5) for the ``present`` tags and no for the others, in any
    image: its rows for present tags are positive, the others negative, and the features feeding it
    are non-negative (they come out of a ReLU). ``width=1`` with 9,176 tags is the real size;
    ``residual_gain`` scales each block's last convolution (below 1 keeps 60 residual sums of random
    weights inside float16's range).
    """
    import torch

    from pipeline.stages.tagger import CHECKPOINT, CONV_COUNT, blocks, conv_shapes

    folder = _folder(models_dir, "deepdanbooru")
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {}
    block_ends = {block.convs[2] for block in blocks()}
    for index, (inputs, outputs, kernel) in conv_shapes(width, len(tags)).items():
        fan_in = inputs * kernel * kernel
        weight = torch.randn(outputs, inputs, kernel, kernel, generator=generator) * (2.0 / fan_in) ** 0.5
        if index in block_ends and residual_gain != 1.0:
            weight = weight * residual_gain
        if index == CONV_COUNT - 1:
            sign = torch.tensor([1.0 if tag in present else -1.0 for tag in tags])
            weight = sign[:, None, None, None] * weight.abs() + sign[:, None, None, None] * 0.1
        else:
            state[f"n_Conv_{index}.bias"] = torch.full((outputs,), 0.01)
        state[f"n_Conv_{index}.weight"] = weight
    state["tags"] = list(tags)
    torch.save(state, folder / CHECKPOINT)
    return folder


def write_fairface(models_dir: Path, gender: str = "female", age_group: int = 3, width: int = 8) -> Path:
    """``damo/cv_resnet34_face-attribute-recognition_fairface``: a narrow ResNet-34 state dict and its config.

    Its last layer's bias makes it answer ``gender`` and ``age_group`` (an index of
    :data:`pipeline.stages.attributes.AGE_GROUPS`) for every face.
    """
    import torch

    from pipeline.stages.attributes import CHECKPOINT, GENDERS, build_resnet34

    folder = _folder(models_dir, "fairface")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = build_resnet34(width)
    with torch.no_grad():
        network.fc.weight.mul_(0.01)
        network.fc.bias.zero_()
        network.fc.bias[7 + GENDERS.index(gender)] = 8.0
        network.fc.bias[9 + age_group] = 8.0
    torch.save(network.state_dict(), folder / CHECKPOINT)
    _configuration(folder, "face-attribute-recognition", "resnet34-face-attribute-recognition-fairface")
    return folder


def write_flcm(models_dir: Path, confidence: float = 0.05) -> Path:
    """``damo/cv_manual_facial-landmark-confidence_flcm``: ModelScope's landmark network, full size (0.4 M).

    Its confidence output is ``confidence`` for every face (so FaceChain's score is ``1 - confidence``).
    The checkpoint is ``{"state_dict": ...}`` with the classifier's weight stored as ModelScope's loader
    expects it (transposed; it normalises and transposes it back).
    """
    import torch
    from modelscope.models.cv.facial_landmark_confidence.flc.manual_landmark_net import LandmarkConfidence

    folder = _folder(models_dir, "flcm")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = LandmarkConfidence(landmark_count=5)
    with torch.no_grad():
        network.cls_net.fc2.weight.zero_()
        network.cls_net.fc2.bias.fill_(confidence)
    state = network.state_dict()
    state["rp_net.binary_cls.weight"] = torch.randn_like(state["rp_net.binary_cls.weight"]).t().contiguous()
    torch.save({"state_dict": state}, folder / "pytorch_model.pt")
    _configuration(folder, "face-2d-keypoints", "manual-facial-landmark-confidence-flcm")
    return folder


def write_rts(models_dir: Path, seed: int = 0) -> Path:
    """``damo/cv_ir_face-recognition-ood_rts``: ModelScope's RTS backbone (IR-SE-64), full size, random.

    48 M parameters (190 MB): written at test time only, never by ``models make-tiny``.
    """
    import torch
    from modelscope.models.cv.face_recognition.torchkit.rts_backbone import RTSBackbone

    folder = _folder(models_dir, "rts")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = RTSBackbone(alpha=16, rts_plus=True)
    torch.save(network.state_dict(), folder / "pytorch_model.pt")
    _configuration(
        folder, "face-recognition", "ir-face-recognition-rts",
        {"type": "rts-backbone", "am_model_name": "pytorch_model.pt", "alpha": 16, "rts_plus": True},
    )  # fmt: skip
    return folder


def write_tiny_stage_models(models_dir: Path) -> list[Path]:
    """Every stage model the tiny route can run, written into ``models_dir`` (returns their folders).

    The orientation model answers "upright", the quality model a constant, the landmark check passes
    every face, FairFace sees a woman in her twenties, the tagger sees the same few tags everywhere.
    """
    return [
        write_rot_bgr(models_dir).parent,
        write_flcm(models_dir),
        write_deepdanbooru(models_dir),
        write_fairface(models_dir),
        write_fqa(models_dir),
    ]


#: DeepDanbooru's real tag count (the rows of its last convolution).
FULL_TAG_COUNT = 9176


def full_size_writers() -> dict[str, Callable[[Path], Path]]:
    """The writers of :func:`write_full_size_stage_models`, by the stage each model serves (RTS: ``ranking``)."""
    tags = [*TINY_TAGS, *(f"tag_{i:04d}" for i in range(FULL_TAG_COUNT - len(TINY_TAGS)))]
    return {
        "orientation": lambda models_dir: write_rot_bgr(models_dir, full_size=True).parent,
        "landmark_check": write_flcm,
        "tagger": lambda models_dir: write_deepdanbooru(models_dir, tags=tags, width=1.0, residual_gain=0.2),
        "face_attributes": lambda models_dir: write_fairface(models_dir, width=64),
        "face_quality": lambda models_dir: write_fqa(models_dir, full_size=True),
        "ranking": write_rts,
    }


def write_full_size_stage_models(models_dir: Path) -> list[Path]:
    """The stages of :func:`write_tiny_stage_models` plus RTS at their real sizes, random weights (timing only).

    Tagger 160.96 M parameters (644 MB), FairFace ResNet-34 at full width, FLCM and RTS as ModelScope
    builds them; the orientation and quality graphs are ResNet-18 stand-ins at their real input sizes
    (their own architectures are not known here). The answers are chosen as the tiny models' are.
    """
    return [write(models_dir) for write in full_size_writers().values()]
