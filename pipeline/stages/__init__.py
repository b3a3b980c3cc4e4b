"""FaceChain's stages, loaded once per worker from the models folder (docs/pipeline.md).

:func:`load_stages` loads every stage the settings select whose model is here (``auto``) or must
be here (``on``), in FaceChain's order; a selected stage that cannot load raises
:class:`StagesUnavailable`, whose lines name the stage and the fix, and the worker does not start.
:func:`load_analyzer` is the face backend with FaceChain's DamoFD or RTS in place of its detector or
recogniser when the settings choose them.

Importing this package imports neither torch nor ModelScope; each stage's module does, when it loads.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.stage_models import BY_NAME, SWITCHED_STAGES, StageStatus, stage_plan

if TYPE_CHECKING:
    from pipeline.config import WorkerSettings
    from pipeline.faces import FaceAnalyzer
    from pipeline.stages.attributes import FaceAttributes
    from pipeline.stages.landmarks import LandmarkChecker
    from pipeline.stages.modelscope_pipelines import FaceFuser, HumanParser, SkinRetoucher
    from pipeline.stages.orientation import OrientationModel
    from pipeline.stages.quality import FaceQuality
    from pipeline.stages.tagger import Tagger

log = logging.getLogger("facechain.stages")

#: Builds a stage's model from (its local folder, the device setting).
Loader = Callable[[Path, str], Any]


class StagesUnavailable(RuntimeError):
    """Stages the settings select that cannot load; one line each, naming the stage and the fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class FaceChainStages:
    """The loaded switched stages (None: off, or ``auto`` without its model)."""

    orientation: OrientationModel | None = None
    skin_retouch: SkinRetoucher | None = None
    human_parsing: HumanParser | None = None
    landmark_check: LandmarkChecker | None = None
    tagger: Tagger | None = None
    face_attributes: FaceAttributes | None = None
    face_quality: FaceQuality | None = None
    face_fusion: FaceFuser | None = None

    @property
    def loaded(self) -> list[str]:
        """Names of the loaded stages, in FaceChain's order."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def _lazy(module: str, name: str) -> Loader:
    """The loader of class ``name`` of ``module``, imported when the stage loads (it brings torch or ModelScope)."""

    def load(folder: Path, device: str) -> Any:
        return getattr(importlib.import_module(module), name)(folder, device)

    return load


LOADERS: dict[str, Loader] = {
    "orientation": _lazy("pipeline.stages.orientation", "OrientationModel"),
    "skin_retouch": _lazy("pipeline.stages.modelscope_pipelines", "SkinRetoucher"),
    "human_parsing": _lazy("pipeline.stages.modelscope_pipelines", "HumanParser"),
    "landmark_check": _lazy("pipeline.stages.landmarks", "LandmarkChecker"),
    "tagger": _lazy("pipeline.stages.tagger", "Tagger"),
    "face_attributes": _lazy("pipeline.stages.attributes", "FaceAttributes"),
    "face_quality": _lazy("pipeline.stages.quality", "FaceQuality"),
    "face_fusion": _lazy("pipeline.stages.modelscope_pipelines", "FaceFuser"),
}


def check_stages(settings: WorkerSettings) -> list[StageStatus]:
    """The plan; raises :class:`StagesUnavailable` when a selected stage cannot load (files, runtime)."""
    plan = stage_plan(settings)
    problems = [s.problem for s in plan if s.problem is not None]
    if problems:
        raise StagesUnavailable(problems)
    return plan


def _load_error(status: StageStatus, folder: Path, exc: BaseException) -> str:
    model = status.model
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    off = "backend" if model.setting in ("face_detection", "face_recognition") else "off"
    if isinstance(exc, ImportError):
        fix = "install its runtime: pip install 'facechain-bot[stages]'"
    else:
        fix = f"fetch it again with `facechain-bot models fetch {model.name}`"
    return (
        f"stage {model.stage}: {model.name} at {folder} could not be loaded ({reason}); {fix}, "
        f"or set FACECHAIN_{model.setting.upper()}={off}"
    )


def load_stages(settings: WorkerSettings, loaders: dict[str, Loader] | None = None) -> FaceChainStages:
    """Load the switched stages the settings select and this machine has, once (the worker's start)."""
    table = {**LOADERS, **(loaders or {})}
    stages = FaceChainStages()
    problems: list[str] = []
    off: list[str] = []
    for status in check_stages(settings):
        model = status.model
        if model.stage not in SWITCHED_STAGES:
            continue
        if not status.in_use:
            if status.selected:
                off.append(f"{model.stage} (no {model.name} in {model.local_dir(settings.models_dir)})")
            continue
        folder = model.local_dir(settings.models_dir)
        try:
            setattr(stages, model.stage, table[model.stage](folder, settings.device))
        except Exception as exc:
            # Third-party loaders raise anything; the worker must not start half-equipped.
            problems.append(_load_error(status, folder, exc))
    if problems:
        raise StagesUnavailable(problems)
    log.info("FaceChain stages on: %s", ", ".join(stages.loaded) or "none")
    if off:
        log.info("FaceChain stages off (auto, model not fetched): %s", "; ".join(off))
    return stages


def load_analyzer(settings: WorkerSettings) -> FaceAnalyzer:
    """The face backend, with FaceChain's DamoFD detector and/or RTS recogniser when the settings choose them."""
    from pipeline.faces import load_face_analyzer

    analyzer: FaceAnalyzer = load_face_analyzer(settings)
    for name, wanted in (("rts", settings.face_recognition == "rts"), ("damofd", settings.face_detection == "damofd")):
        if not wanted:
            continue
        model = BY_NAME[name]
        status = next(s for s in stage_plan(settings) if s.model is model)
        if status.problem:
            raise StagesUnavailable([status.problem])
        folder = model.local_dir(settings.models_dir)
        try:
            if name == "rts":
                from pipeline.stages.recognition import RecognitionOverride, RtsEmbedder

                analyzer = RecognitionOverride(analyzer, RtsEmbedder(folder, settings.device))
            else:
                from pipeline.stages.modelscope_pipelines import DamoFdAnalyzer

                analyzer = DamoFdAnalyzer(folder, analyzer, settings.device)
        except Exception as exc:
            raise StagesUnavailable([_load_error(status, folder, exc)]) from exc
    return analyzer
