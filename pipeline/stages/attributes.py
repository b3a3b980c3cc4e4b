"""Face attributes: FaceChain's FairFace model (``damo/cv_resnet34_face-attribute-recognition_fairface``).

``pytorch_model.pt`` is the state dict of a torchvision ResNet-34 whose last layer has 18 outputs
(7 race, 2 gender, 9 age). This module builds the same network (same parameter names) from plain
torch, so loading it needs neither torchvision nor ModelScope; its width is read from the weights,
so a narrow checkpoint in the same layout (the tiny model) loads too. Input as ModelScope's pipeline
prepares it: the 112² aligned face, resized to 224², ImageNet-normalised RGB.

FaceChain sums the gender and age probabilities over the kept photos and takes the largest:
female/male, and age group < 2 (0-9 years) → a child's phrase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.jobs import Subject

CHECKPOINT = "pytorch_model.pt"
BLOCKS = (3, 4, 6, 3)
OUTPUTS = 18
GENDERS = ("male", "female")
AGE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
#: Age groups under this index are children (FaceChain: ``age < 2``); from ``MATURE_AGE_GROUP`` on,
#: FaceChain says "a mature man/woman" (this project's subjects have no such phrase: adults).
CHILD_AGE_GROUPS = 2
MATURE_AGE_GROUP = 5
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def build_resnet34(width: int = 64, outputs: int = OUTPUTS) -> Any:
    """A ResNet-34 with torchvision's parameter names; ``width`` channels in its first stage."""
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, inputs: int, channels: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.downsample = None
            if stride != 1 or inputs != channels:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inputs, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
                )

        def forward(self, x: Any) -> Any:
            shortcut = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(y)) + shortcut)

    class ResNet34(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            channels = width
            for stage, count in enumerate(BLOCKS):
                out = width * 2**stage
                layer = [Basic(channels, out, 2 if stage else 1)]
                layer += [Basic(out, out, 1) for _ in range(count - 1)]
                channels = out
                self.add_module(f"layer{stage + 1}", nn.Sequential(*layer))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(channels, outputs)

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for stage in range(len(BLOCKS)):
                x = getattr(self, f"layer{stage + 1}")(x)
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet34()


def model_input(face_112_rgb: np.ndarray) -> np.ndarray:
    """The ``(1, 3, 224, 224)`` float32 input ModelScope's FairFace pipeline makes from a 112² face."""
    resized = Image.fromarray(np.ascontiguousarray(face_112_rgb)).resize((224, 224), Image.Resampling.BILINEAR)
    pixels = (np.asarray(resized, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


class FaceAttributes:
    """FairFace: gender and age-group probabilities of an aligned face."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        import torch

        from pipeline.stages.common import torch_device

        state = torch.load(Path(model_dir) / CHECKPOINT, map_location="cpu", weights_only=True)
        network = build_resnet34(int(state["conv1.weight"].shape[0]), int(state["fc.weight"].shape[0]))
        network.load_state_dict(state, strict=True)
        self.device = torch_device(device)
        self.network = network.to(self.device).eval()

    def scores(self, face_112_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gender probabilities [male, female], age-group probabilities [9]) of a 112² aligned face."""
        import torch

        with torch.inference_mode():
            logits = self.network(torch.from_numpy(model_input(face_112_rgb)).to(self.device))[0].float().cpu()
        gender = torch.softmax(logits[7:9], dim=0).numpy()
        age = torch.softmax(logits[9:18], dim=0).numpy()
        return gender, age


def subject_from_scores(gender: np.ndarray, age: np.ndarray) -> Subject:
    """FaceChain's choice from summed probabilities: the likelier gender; a child under 10."""
    female = int(np.argmax(gender)) == 1
    if int(np.argmax(age)) < CHILD_AGE_GROUPS:
        return Subject.GIRL if female else Subject.BOY
    return Subject.WOMAN if female else Subject.MAN
