"""Where the weights come from, and loading the Stable Diffusion 1.5 base pipeline once.

``FACECHAIN_BASE_MODEL`` accepts three things:

* a diffusers folder (one with ``model_index.json``, or with one below it);
* a single-file ``.safetensors`` checkpoint in the original (LDM / A1111) layout. Its component
  configs and tokenizer come from a local diffusers folder of the same architecture, never from the
  network (see :func:`find_single_file_config`);
* a hub id, ``owner/name`` (ModelScope or Hugging Face), optionally ``modelscope:``/``hf:``-prefixed,
  with ``@revision`` and a sub path: ``modelscope:ly261666/cv_portrait_model@v2.0/film/film``. It is
  looked up where ``facechain-bot models fetch`` writes it: ``<models_dir>/<owner>/<name>``.

Model references inside styles (a style LoRA file) use the same syntax with a scheme, so they can
never be mistaken for blob keys (which have no colon): ``modelscope:YorickHe/fairy_lora/fairy.safetensors``,
``hf:owner/name/file.safetensors`` or ``file:/abs/path.safetensors``.

Importing this module does not import torch or diffusers (``models fetch`` runs without them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.config import WorkerSettings
from pipeline.errors import WorkerSetupError
from pipeline.jobs import ErrorCode
from pipeline.jobs import is_model_reference as is_model_reference  # re-exported: one definition, in the contract
from pipeline.recipe import BASE_MODELS, SchedulerName
from pipeline.styles import lora_roots, outside_roots
from storage.files import make_private_dirs, restrict_tree

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionPipeline

Hub = Literal["modelscope", "huggingface"]

#: Where a hub repo keeps its diffusers folder, when it holds several (FaceChain's base model does).
BASE_MODEL_SUBFOLDERS: dict[str, str] = {m.repo: m.subfolder for m in BASE_MODELS.values()}
#: Revisions FaceChain pins; used by ``models fetch`` when a reference names none.
DEFAULT_REVISIONS: dict[str, str] = {m.repo: m.revision for m in BASE_MODELS.values()}
#: Owners whose bare ``owner/name`` ids live on ModelScope (FaceChain's home); others: Hugging Face.
MODELSCOPE_OWNERS: frozenset[str] = frozenset({"ly261666", "YorickHe", "damo", "iic", "Cherrytest"})
#: Local diffusers folders of the SD 1.5 architecture a single-file checkpoint can borrow configs from.
SD15_CONFIG_REPOS: tuple[str, ...] = (
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-v1-5",
    "ly261666/cv_portrait_model",
)

_SCHEMES: dict[str, Hub] = {
    "modelscope": "modelscope",
    "ms": "modelscope",
    "hf": "huggingface",
    "huggingface": "huggingface",
}
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Files of a base model or style repository that no loader here reads (other frameworks' formats,
#: pickles). Stage models are fetched by their own file lists instead (pipeline/stage_models.py).
_FETCH_IGNORE = ["*.ckpt", "*.msgpack", "*.onnx", "*.onnx_data", "*.h5", "*.ot", "*.pb", "*.tflite"]


class ModelsMissingError(WorkerSetupError, FileNotFoundError):
    """A weight the worker needs is not on this machine."""

    error_code = ErrorCode.MODEL_MISSING

    def __init__(self, what: str, looked_at: Path | Sequence[Path], hint: str = "", *, message: str = "") -> None:
        paths = [looked_at] if isinstance(looked_at, Path) else list(looked_at)
        where = ", ".join(str(p) for p in paths)
        message = message or (
            f"{what} not found (looked at {where}). Run `facechain-bot models fetch` on a machine with "
            f"internet access to download it into FACECHAIN_MODELS_DIR, or point FACECHAIN_BASE_MODEL at "
            f"a local diffusers folder or .safetensors checkpoint."
        )
        super().__init__(message + (f" {hint}" if hint else ""))
        self.looked_at = paths


class StyleLoraMissing(ModelsMissingError):
    """A style's LoRA file is not on this machine; the message names the style and how to get the file."""

    def __init__(self, style: str, reference: str, looked_at: Path) -> None:
        if reference.startswith("file:"):
            how = "put the file there (the style file names it) or fix the style file's lora"
        else:
            how = (
                "run `facechain-bot models fetch` to download it into FACECHAIN_MODELS_DIR "
                "(for the tiny test route, `facechain-bot models make-tiny` writes a tiny one there)"
            )
        text = f"style {style!r}: its LoRA {reference} is missing (looked at {looked_at}); {how}"
        super().__init__(f"style {style!r}", looked_at, message=text)
        self.style = style


class UploadedStyleLoraMissing(ModelsMissingError):
    """A community style's uploaded LoRA is gone from the blob store (the style was removed or replaced)."""

    def __init__(self, style: str, key: str) -> None:
        text = f"style {style!r}: its uploaded LoRA {key} is not in the blob store (the style was removed?)"
        super().__init__(f"style {style!r}", [], message=text)
        self.style = style


class StyleLoraRefused(ValueError):
    """A style's ``lora`` that this worker will not open: malformed, or a file outside its models and styles dirs."""

    error_code = ErrorCode.BAD_PAYLOAD


class UnsupportedModelFormat(WorkerSetupError, ValueError):
    """A local model file in a format this worker refuses to load (e.g. a pickled ``.ckpt``)."""

    error_code = ErrorCode.MODEL_MISSING


@dataclass(frozen=True)
class HubRef:
    """A model on ModelScope or Hugging Face: repo, optional revision, optional path inside it."""

    hub: Hub
    repo: str
    revision: str | None = None
    subpath: str = ""

    def local_dir(self, models_dir: Path) -> Path:
        """The folder ``models fetch`` downloads this repo into."""
        owner, name = self.repo.split("/")
        return models_dir / owner / name

    def __str__(self) -> str:
        scheme = "modelscope" if self.hub == "modelscope" else "hf"
        revision = f"@{self.revision}" if self.revision else ""
        subpath = f"/{self.subpath}" if self.subpath else ""
        return f"{scheme}:{self.repo}{revision}{subpath}"


def parse_hub_ref(value: str) -> HubRef | None:
    """Parse ``[scheme:]owner/name[@revision][/sub/path]``; None when it is not that shape."""
    text = value.strip()
    hub: Hub | None = None
    scheme, colon, rest = text.partition(":")
    if colon:
        hub = _SCHEMES.get(scheme.lower())
        if hub is None:
            return None
        text = rest
    parts = text.strip("/").split("/")
    if len(parts) < 2:
        return None
    owner, name_rev, *sub = parts
    name, _, revision = name_rev.partition("@")
    if not (_PART.match(owner) and _PART.match(name)) or any(p in ("", ".", "..") for p in sub):
        return None
    if hub is None:
        hub = "modelscope" if owner in MODELSCOPE_OWNERS else "huggingface"
    return HubRef(hub=hub, repo=f"{owner}/{name}", revision=revision or None, subpath="/".join(sub))


#: Suffixes of model files: a value ending in one is a file path, never a hub id.
_FILE_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")


def looks_like_path(value: str) -> bool:
    """True for a value written as a file system path (``/…``, ``./…``, ``../…``, ``~…``, ``C:\\…``,
    ``….safetensors``): it is looked up there and never read as a hub id."""
    text = value.strip()
    return (
        text.startswith(("/", ".", "~"))
        or "\\" in text
        or re.match(r"^[A-Za-z]:[\\/]", text) is not None
        or text.lower().endswith(_FILE_SUFFIXES)
    )


def _find_diffusers_dir(root: Path) -> Path | None:
    """``root`` if it is a diffusers pipeline folder, else the shallowest one below it."""
    if (root / "model_index.json").is_file():
        return root
    if not root.is_dir():
        return None
    found = [
        p.parent
        for p in root.rglob("model_index.json")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    found.sort(key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None


def _local_model(path: Path, what: str) -> Path:
    if path.is_dir():
        found = _find_diffusers_dir(path)
        if found is None:
            raise ModelsMissingError(f"{what}: a diffusers pipeline (model_index.json)", path)
        return found
    if path.is_file():
        if path.suffix == ".safetensors":
            return path
        raise UnsupportedModelFormat(
            f"{path}: only diffusers folders and .safetensors checkpoints are loaded (pickled "
            f"{path.suffix} files can execute code); convert it to .safetensors first"
        )
    raise ModelsMissingError(what, path)


def resolve_base_model(settings: WorkerSettings) -> Path:
    """The local diffusers folder or ``.safetensors`` file that ``settings.base_model`` names.

    Raises :class:`ModelsMissingError` naming the path looked at when it is not there.
    """
    value = settings.base_model.strip()
    if value.startswith("file:"):
        return _local_model(Path(value[5:]).expanduser(), "base model")
    path = Path(value).expanduser()
    ref = None if path.exists() or looks_like_path(value) else parse_hub_ref(value)
    if ref is None:
        return _local_model(path, f"base model (FACECHAIN_BASE_MODEL={value})")
    root = ref.local_dir(settings.models_dir)
    subpath = ref.subpath or BASE_MODEL_SUBFOLDERS.get(ref.repo, "")
    if subpath:
        candidate = root / subpath
        if (candidate / "model_index.json").is_file():
            return candidate
        if candidate.is_file() and candidate.suffix == ".safetensors":
            return candidate
    found = _find_diffusers_dir(root)
    if found is None:
        looked = root / subpath if subpath else root
        guessed_hub = ":" not in value and ref.hub == "huggingface"
        hint = f"({value} was read as a hub id; write a local folder as ./{value})" if guessed_hub else ""
        raise ModelsMissingError(f"base model {ref}", looked, hint=hint)
    return found


def model_file_path(models_dir: Path, reference: str) -> Path:
    """Where ``models fetch`` puts the file a hub reference names: ``<models_dir>/<owner>/<name>/<path>``.

    Raises ValueError for anything but ``scheme:owner/name[@revision]/path/to/file``.
    """
    ref = parse_hub_ref(reference)
    if ref is None or not ref.subpath:
        raise ValueError(f"not a model file reference: {reference!r} (expected scheme:owner/name/file)")
    return ref.local_dir(models_dir) / ref.subpath


def resolve_model_file(settings: WorkerSettings, reference: str) -> Path:
    """The local file a model reference names (``modelscope:``/``hf:`` repo + path, or ``file:``)."""
    if reference.startswith("file:"):
        path = Path(reference[5:]).expanduser()
        if not path.is_file():
            raise ModelsMissingError(f"model file {reference}", path)
        return path
    path = model_file_path(settings.models_dir, reference)
    ref = parse_hub_ref(reference)
    assert ref is not None  # model_file_path parsed it
    root = ref.local_dir(settings.models_dir)
    if path.is_file():
        return path
    if root.is_dir():
        # ModelScope repos sometimes nest files one level deeper than the reference says.
        matches = sorted(p for p in root.rglob(Path(ref.subpath).name) if p.is_file())
        if matches:
            return matches[0]
    raise ModelsMissingError(f"model file {ref}", path)


def resolve_style_lora(settings: WorkerSettings, style: str, reference: str) -> Path:
    """The LoRA file of a style file's ``lora`` reference, on this worker.

    A hub reference is looked up where ``models fetch`` puts it (:func:`model_file_path`); a ``file:``
    path must resolve (symlinks followed) inside FACECHAIN_MODELS_DIR or FACECHAIN_STYLES_DIR.
    Raises :class:`StyleLoraMissing` (the message names the style and ``models fetch``) or
    :class:`StyleLoraRefused`.
    """
    if reference.startswith("file:"):
        path = Path(reference[5:]).expanduser()
        problem = outside_roots(path, lora_roots(settings.models_dir, settings.styles_dir))
        if problem is not None:
            raise StyleLoraRefused(
                f"style {style!r}: its LoRA {reference} is refused: {problem} of this worker "
                "(set FACECHAIN_STYLES_DIR here as on the bot)"
            )
    try:
        return resolve_model_file(settings, reference)
    except ModelsMissingError as exc:
        raise StyleLoraMissing(style, reference, exc.looked_at[0]) from None
    except ValueError as exc:
        raise StyleLoraRefused(f"style {style!r}: {exc}") from None


def find_single_file_config(checkpoint: Path, settings: WorkerSettings) -> Path:
    """A local diffusers folder whose configs and tokenizer describe ``checkpoint``'s architecture.

    ``from_single_file`` otherwise downloads them from the hub. Looked for, in order: the checkpoint's
    own folder (when it holds ``model_index.json``), a folder named like the checkpoint beside it
    (``model.safetensors`` → ``model/``), then an SD 1.5 diffusers folder fetched into ``models_dir``
    (:data:`SD15_CONFIG_REPOS`).
    """
    if (checkpoint.parent / "model_index.json").is_file():
        return checkpoint.parent
    # The checkpoint's own folder is only checked directly: it may be a big shared models folder.
    candidates = [checkpoint.with_suffix(""), *(settings.models_dir / repo for repo in SD15_CONFIG_REPOS)]
    for candidate in candidates:
        found = _find_diffusers_dir(candidate)
        if found is not None:
            return found
    candidates.insert(1, checkpoint.parent)
    raise ModelsMissingError(
        f"a diffusers config folder for the single-file checkpoint {checkpoint.name}",
        candidates,
        hint="Any SD 1.5 diffusers folder works (only its configs and tokenizer are read).",
    )


def load_base_pipeline(
    settings: WorkerSettings, device: torch.device | str, dtype: torch.dtype
) -> StableDiffusionPipeline:
    """Load the base SD 1.5 pipeline from local files only, on ``device`` in ``dtype``.

    The safety checker is left out (a separate NSFW check runs on the results) and the scheduler is
    the recipe's DPM-Solver (``settings.scheduler``) built from the model's own noise schedule. All weights are frozen.
    With ``prepared_model_cache`` the converted pipeline is read from (or first written to) its
    prepared copy (:mod:`pipeline.prepared_models`).
    """
    from diffusers import StableDiffusionPipeline

    from pipeline.prepared_models import load_prepared, prepared_dir, save_prepared

    source = resolve_base_model(settings)
    common = {
        "dtype": dtype,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
        "local_files_only": True,
    }
    config = None if source.is_dir() else find_single_file_config(source, settings)
    prepared = prepared_dir(settings.models_dir, source, dtype, config) if settings.prepared_model_cache else None
    pipe = load_prepared(prepared, common) if prepared is not None else None
    if pipe is None:
        if config is None:
            pipe = StableDiffusionPipeline.from_pretrained(source, **common)
        else:
            pipe = StableDiffusionPipeline.from_single_file(str(source), config=str(config), **common)
        if prepared is not None:
            save_prepared(pipe, prepared, source)
    pipe.scheduler = make_scheduler(settings.scheduler, pipe.scheduler.config)
    pipe = pipe.to(device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
        module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def native_resolution(pipe: StableDiffusionPipeline) -> int:
    """The side in px the base model was made for: its UNet's latent ``sample_size`` × the VAE's scale.

    512 for SD 1.5 (64 × 8), 64 for the tiny test model (8 × 8).
    """
    size = pipe.unet.config.sample_size
    side = size if isinstance(size, int) else int(size[0])
    return int(side) * int(pipe.vae_scale_factor)


def model_side(resolution: int, pipe: StableDiffusionPipeline) -> int:
    """The side training and generation run at: ``resolution`` (the recipe's 512, or FACECHAIN_RESOLUTION),
    at most the base model's own size. FaceChain's 512 is SD 1.5's own; a model made for less (the tiny
    test model: 64 px) gains nothing from more, and pays for it (its attention grows with the square)."""
    return min(resolution, native_resolution(pipe))


def make_scheduler(name: SchedulerName, config: Any) -> Any:
    """The denoising scheduler ``name`` on a model's noise schedule (``config``)."""
    from diffusers import DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler

    kinds = {"dpm_solver_singlestep": DPMSolverSinglestepScheduler, "dpm_solver_multistep": DPMSolverMultistepScheduler}
    return kinds[name].from_config(config)


def clone_pipeline(pipe: StableDiffusionPipeline, dtype: torch.dtype) -> StableDiffusionPipeline:
    """A second resident pipeline with its own copy of the weights in ``dtype``, made on the device.

    The worker holds one pipeline for generation and one for training (training adds adapters to its
    UNet while a generation may run). Copying the loaded weights on the GPU takes a fraction of a
    second where reading and converting the files again takes several; the tokenizer is shared
    (read-only) and the scheduler is a fresh one from the same config.
    """
    import copy

    import torch
    from diffusers import StableDiffusionPipeline

    parts = {}
    for name in ("unet", "vae", "text_encoder"):
        module = copy.deepcopy(getattr(pipe, name)).to(dtype=dtype, memory_format=torch.contiguous_format)
        module.requires_grad_(False)
        module.eval()
        parts[name] = module
    clone = StableDiffusionPipeline(
        **parts,
        tokenizer=pipe.tokenizer,
        scheduler=type(pipe.scheduler).from_config(pipe.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    clone.set_progress_bar_config(disable=True)
    return clone


# ------------------------------------------------------------------------------------------ fetching
def default_model_names(settings: WorkerSettings, *, everything: bool = False) -> list[str]:
    """What ``models fetch`` downloads by default: the base model, every style's LoRA repo and the
    model of every stage the settings select (every stage's with ``everything``), by name."""
    from pipeline.stage_models import fetch_targets
    from pipeline.styles import load_styles

    names: list[str] = []
    base = settings.base_model.strip()
    if not Path(base).expanduser().exists() and not looks_like_path(base) and parse_hub_ref(base) is not None:
        names.append(base)
    for style in load_styles(settings).values():
        if style.lora is not None and parse_hub_ref(style.lora) is not None:
            names.append(style.lora)
    names += [model.name for model in fetch_targets(settings, everything=everything)]
    return list(dict.fromkeys(names))


#: ``report(line)`` for each repository and file ``fetch_models`` starts, and the bytes of each file.
FetchReport = Callable[[str], None]


def fetch_models(
    settings: WorkerSettings,
    names: Iterable[str] | None = None,
    *,
    report: FetchReport | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> list[Path]:
    """Download models into ``<models_dir>/<owner>/<name>``; returns the local folders.

    ``names`` are stage model names of :mod:`pipeline.stage_models` (``rot_bgr``, ``fairface``, ...)
    or hub references (see :func:`parse_hub_ref`); a reference with a file sub path
    (``…/file.safetensors``) downloads just that file. ModelScope repositories come file by file from
    ``settings.modelscope_endpoint`` with resume (:mod:`pipeline.hub_fetch`); Hugging Face ones through
    ``huggingface_hub``. Files already fetched at the same revision are not downloaded again.
    """
    from pipeline import hub_fetch
    from pipeline.stage_models import BY_NAME

    say = report or (lambda line: None)
    hub = hub_fetch.ModelScopeHub(settings.modelscope_endpoint)
    targets: list[Path] = []
    for name in names if names is not None else default_model_names(settings):
        model = BY_NAME.get(name)
        if model is not None:
            if model.model_id is None or model.revision is None:
                raise ValueError(f"{name} is not downloaded by `models fetch` ({model.note or model.title})")
            request = hub_fetch.FetchRequest(
                repo=model.model_id,
                revision=model.revision,
                target=model.local_dir(settings.models_dir),
                files=model.files if model.fetch == "files" else None,
                accept=model.wants,
            )
            label = f"{name} ({model.hub_ref})"
        else:
            ref = parse_hub_ref(name)
            if ref is None:
                raise ValueError(f"not a stage model or hub model id: {name!r}")
            target = ref.local_dir(settings.models_dir)
            revision = ref.revision or DEFAULT_REVISIONS.get(ref.repo)
            if ref.hub == "huggingface":
                say(f"{ref} (Hugging Face)")
                _fetch_huggingface(ref, target, revision)
                restrict_tree(target)
                targets.append(target)
                continue
            request = hub_fetch.FetchRequest(
                repo=ref.repo, revision=revision or "master", target=target, accept=_reference_filter(ref.subpath)
            )
            label = str(ref)
        planned = hub_fetch.plan(hub, [request])
        pending = [f for f in planned if not f.is_done()]
        total = sum(f.remote.size or 0 for f in pending)
        say(f"{label}: {len(planned)} file(s), {len(pending)} to download ({total / 1e6:.1f} MB)")
        for item in pending:
            size = "" if item.remote.size is None else f" ({item.remote.size / 1e6:.1f} MB)"
            say(f"  {item.remote.path}{size}")
            hub.download(item, progress)
        make_private_dirs(request.target)
        restrict_tree(request.target)  # 0700 folders, 0600 files, like everything the service writes
        targets.append(request.target)
    return targets


def _reference_filter(subpath: str) -> Callable[[str], bool]:
    """Which files of a repository a reference's sub path takes (a file, a folder, or everything)."""
    from pipeline.hub_fetch import patterns

    if Path(subpath).suffix:
        name = Path(subpath).name
        # ModelScope repos sometimes nest files one level deeper than the reference says.
        return lambda path: path == subpath or path.rsplit("/", 1)[-1] == name
    return patterns([f"{subpath}/*"] if subpath else None, _FETCH_IGNORE)


def _fetch_huggingface(ref: HubRef, target: Path, revision: str | None) -> None:
    from huggingface_hub import snapshot_download as hf_download

    is_file = Path(ref.subpath).suffix != ""
    allow = [ref.subpath] if is_file else ([f"{ref.subpath}/*"] if ref.subpath else None)
    target.mkdir(parents=True, exist_ok=True)
    hf_download(ref.repo, revision=revision, local_dir=target, allow_patterns=allow, ignore_patterns=_FETCH_IGNORE)


# -------------------------------------------------------------------------------------- tiny models
#: Words the tiny tokenizer learns merges for, so common prompt words become single tokens.
_TINY_WORDS = (
    "a", "man", "woman", "boy", "girl", "person", "portrait", "photo", "the", "of", "in", "with",
    "handsome", "beautiful", "children", "quality", "best", "high", "low", "suit", "business",
)  # fmt: skip


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level BPE alphabet: every byte mapped to a printable character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    extra = 0
    for byte in range(256):
        if byte not in keep:
            keep.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(c) for byte, c in zip(keep, chars, strict=True)}


def write_tiny_clip_tokenizer(folder: Path) -> int:
    """Write a small CLIP BPE tokenizer (vocab.json, merges.txt, configs); returns the vocab size.

    The vocabulary holds all 256 byte-level symbols, alone and word-final (``</w>``), so any text
    tokenizes; a few merges make common prompt words whole tokens, like the real CLIP vocabulary.
    """
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab[symbol] = len(vocab)
    merges: list[str] = []
    for word in _TINY_WORDS:
        pieces = list(word)
        pieces[-1] += "</w>"
        while len(pieces) > 1:
            merge = f"{pieces[0]} {pieces[1]}"
            if merge not in merges:
                merges.append(merge)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"}
    for token in specials.values():
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokens = {**specials, "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(tokens), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **tokens}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return len(vocab)


def make_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight SD 1.5-shaped pipeline to ``folder`` (diffusers layout); returns it.

    Same component classes and on-disk format as the real model (cross-attention UNet, 8× KL VAE,
    CLIP text tower and BPE tokenizer, DPM-Solver scheduler), a few hundred thousand parameters: for
    tests and for trying the whole bot on a machine without the real weights (64 px images).
    """
    return make_random_pipeline(folder, full_size=False, seed=seed)


#: SD 1.5's architecture (UNet 859.5 M, VAE 83.7 M, CLIP ViT-L/14 text tower 123.1 M parameters).
_SD15_UNET = {
    "sample_size": 64,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
_TINY_UNET = {
    "sample_size": 8, "layers_per_block": 1, "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"), "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32, "attention_head_dim": 8,
}  # fmt: skip


def make_random_pipeline(folder: Path, *, full_size: bool = False, seed: int = 0) -> Path:
    """Write a random-weight pipeline in diffusers' layout: tiny (tests) or SD 1.5's full size.

    The full-size one has SD 1.5's exact architecture, for GPU benchmarks and smoke tests: speed and
    memory do not depend on weight values. Its images are noise, like the tiny one's.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    vocab_size = write_tiny_clip_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            in_channels=4, out_channels=4, norm_num_groups=32, **(_SD15_UNET if full_size else _TINY_UNET)
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512) if full_size else (32, 32, 32, 32),
            layers_per_block=2 if full_size else 1,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=512 if full_size else 64,
            scaling_factor=0.18215,
        )
        width = 768 if full_size else 32
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=max(vocab_size, 49408) if full_size else vocab_size,
                hidden_size=width,
                intermediate_size=3072 if full_size else 37,
                num_hidden_layers=12 if full_size else 2,
                num_attention_heads=12 if full_size else 4,
                max_position_embeddings=77,
                projection_dim=width,
                hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        # A trained CLIP's final layer norm has a learned offset; a fresh one outputs zero-mean
        # tokens, which no real text encoder does (and which prompt weighting cannot rescale).
        # (transformers ≥ 5.6 flattened CLIPTextModel; older versions wrap it in .text_model)
        norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
        with torch.no_grad():
            norm.weight.add_(torch.randn_like(norm.weight) * 0.2)
            norm.bias.copy_(torch.randn_like(norm.bias) * 0.2 + 0.1)
    # SD 1.5's own noise schedule.
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        prediction_type="epsilon",
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    # save_pretrained writes the tokenizer as tokenizer.json; the real SD 1.5 folders ship
    # vocab.json + merges.txt instead, so keep that layout (and that loading path) exercised.
    (folder / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    write_tiny_clip_tokenizer(folder / "tokenizer")
    return folder
