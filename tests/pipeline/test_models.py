"""Model resolution and loading: tiny pipelines in the real formats through the production loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DPMSolverSinglestepScheduler, StableDiffusionPipeline
from safetensors.torch import load_file

from pipeline import devices
from pipeline.models import (
    HubRef,
    ModelsMissingError,
    UnsupportedModelFormat,
    fetch_models,
    find_single_file_config,
    is_model_reference,
    load_base_pipeline,
    parse_hub_ref,
    resolve_base_model,
    resolve_model_file,
)
from tests.pipeline.hub_server import serve_hub
from tests.pipeline.tiny import save_single_file, tiny_settings


def _copy_configs(source: Path, target: Path) -> Path:
    """A diffusers folder with configs and tokenizer but no weights (what a single file borrows)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return target


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


# ------------------------------------------------------------------------------- diffusers folder
def test_tiny_pipeline_round_trips_through_the_loader(tiny_model_dir: Path, tmp_path: Path) -> None:
    pipe = load_base_pipeline(tiny_settings(tiny_model_dir, tmp_path), "cpu", torch.float32)

    assert isinstance(pipe, StableDiffusionPipeline)
    assert isinstance(pipe.scheduler, DPMSolverSinglestepScheduler)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert pipe.vae_scale_factor == 8
    saved = load_file(tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert torch.equal(pipe.unet.state_dict()["conv_in.weight"], saved["conv_in.weight"])
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    image = pipe(
        "<fcsks>, a handsome man, business suit",
        num_inference_steps=1,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (64, 64)


def test_tiny_tokenizer_uses_vocab_and_merges_and_knows_every_character(tiny_pipe: object) -> None:
    tokenizer = tiny_pipe.tokenizer  # type: ignore[attr-defined]
    text = "<fcsks>, a handsome man, business suit — ünïcode 日本"
    ids = tokenizer(text).input_ids

    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in ids[1:-1], "a character fell back to the unknown token"
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")
    assert tokenizer.tokenize("a handsome man") == ["a</w>", "handsome</w>", "man</w>"]


def test_make_tiny_pipeline_writes_the_sd15_tokenizer_layout(tiny_model_dir: Path) -> None:
    files = {p.name for p in (tiny_model_dir / "tokenizer").iterdir()}
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= files
    assert "tokenizer.json" not in files
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["scheduler"][1] == "DPMSolverMultistepScheduler"


# ---------------------------------------------------------------------------------- single file
def test_single_file_checkpoint_loads_the_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    checkpoint = save_single_file(tiny_model_dir, tmp_path / "ckpt" / "portrait.safetensors")
    _copy_configs(tiny_model_dir, tmp_path / "ckpt" / "portrait")  # configs beside it, named like it
    reference = load_base_pipeline(tiny_settings(tiny_model_dir, tmp_path), "cpu", torch.float32)

    pipe = load_base_pipeline(tiny_settings(checkpoint, tmp_path), "cpu", torch.float32)

    assert resolve_base_model(tiny_settings(checkpoint, tmp_path)) == checkpoint
    assert isinstance(pipe.scheduler, DPMSolverSinglestepScheduler)
    assert pipe.safety_checker is None
    for part in ("unet", "vae", "text_encoder"):
        assert _state_equal(getattr(pipe, part), getattr(reference, part)), part


def test_single_file_borrows_configs_from_a_fetched_sd15_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = tiny_settings("unused", tmp_path)
    checkpoint = tmp_path / "elsewhere" / "model.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    target = settings.models_dir / "runwayml" / "stable-diffusion-v1-5"
    _copy_configs(tiny_model_dir, target)

    assert find_single_file_config(checkpoint, settings) == target


def test_single_file_without_any_config_folder_is_reported(tmp_path: Path) -> None:
    checkpoint = tmp_path / "lonely.safetensors"
    checkpoint.write_bytes(b"")
    settings = tiny_settings(checkpoint, tmp_path)

    with pytest.raises(ModelsMissingError) as caught:
        load_base_pipeline(settings, "cpu", torch.float32)
    message = str(caught.value)
    assert "facechain-bot models fetch" in message
    assert str(settings.models_dir / "runwayml" / "stable-diffusion-v1-5") in message


# ------------------------------------------------------------------------------------ hub ids
def test_modelscope_id_finds_facechain_subfolder(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = tiny_settings("ly261666/cv_portrait_model", tmp_path)
    repo = settings.models_dir / "ly261666" / "cv_portrait_model"
    _copy_configs(tiny_model_dir, repo / "other_model")  # a sibling pipeline that must not win
    shutil.copytree(tiny_model_dir, repo / "film" / "film")

    assert resolve_base_model(settings) == repo / "film" / "film"
    pipe = load_base_pipeline(settings, "cpu", torch.float32)
    assert isinstance(pipe, StableDiffusionPipeline)


def test_hub_id_searches_for_model_index_below_the_repo(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = tiny_settings("hf:some-org/portrait-sd15@main", tmp_path)
    repo = settings.models_dir / "some-org" / "portrait-sd15"
    shutil.copytree(tiny_model_dir, repo / "deep" / "er")
    _copy_configs(tiny_model_dir, repo / ".cache" / "x")  # download caches are ignored

    assert resolve_base_model(settings) == repo / "deep" / "er"


def test_missing_hub_model_names_the_path_and_the_fetch_command(tmp_path: Path) -> None:
    settings = tiny_settings("ly261666/cv_portrait_model", tmp_path)

    with pytest.raises(ModelsMissingError) as caught:
        resolve_base_model(settings)
    message = str(caught.value)
    assert str(settings.models_dir / "ly261666" / "cv_portrait_model" / "film" / "film") in message
    assert "facechain-bot models fetch" in message
    assert caught.value.error_code == "model_missing"


def test_missing_local_folder_and_pickled_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelsMissingError, match="no-such-model"):
        resolve_base_model(tiny_settings(tmp_path / "no-such-model", tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelsMissingError, match=r"model_index\.json"):
        resolve_base_model(tiny_settings(empty, tmp_path))
    pickled = tmp_path / "v1-5-pruned.ckpt"
    pickled.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(UnsupportedModelFormat, match="safetensors"):
        resolve_base_model(tiny_settings(pickled, tmp_path))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ly261666/cv_portrait_model", HubRef("modelscope", "ly261666/cv_portrait_model")),
        ("runwayml/stable-diffusion-v1-5", HubRef("huggingface", "runwayml/stable-diffusion-v1-5")),
        (
            "modelscope:YorickHe/fairy_lora@v1.0.0/fairy.safetensors",
            HubRef("modelscope", "YorickHe/fairy_lora", "v1.0.0", "fairy.safetensors"),
        ),
        ("hf:org/name/sub/dir", HubRef("huggingface", "org/name", None, "sub/dir")),
        ("ms:org/name", HubRef("modelscope", "org/name")),
        ("just-a-name", None),
        ("s3:bucket/key", None),
        ("org/name/../../etc", None),
    ],
)
def test_parse_hub_ref(text: str, expected: HubRef | None) -> None:
    assert parse_hub_ref(text) == expected


def test_hub_ref_string_form_parses_back() -> None:
    ref = HubRef("modelscope", "YorickHe/fairy_lora", "v1.0.0", "fairy.safetensors")
    assert parse_hub_ref(str(ref)) == ref
    assert str(ref) == "modelscope:YorickHe/fairy_lora@v1.0.0/fairy.safetensors"


def test_model_references_are_not_blob_keys() -> None:
    assert is_model_reference("modelscope:YorickHe/fairy_lora/fairy.safetensors")
    assert is_model_reference("hf:org/name/file.safetensors")
    assert is_model_reference("file:/srv/loras/x.safetensors")
    assert not is_model_reference("styles/guild-1/cyber.safetensors")
    assert not is_model_reference("runs/abc12345/lora.safetensors")


def test_resolve_model_file(tmp_path: Path) -> None:
    settings = tiny_settings("unused", tmp_path)
    nested = settings.models_dir / "YorickHe" / "fairy_lora" / "v1" / "fairy.safetensors"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"x")
    local = tmp_path / "mine.safetensors"
    local.write_bytes(b"x")

    assert resolve_model_file(settings, "modelscope:YorickHe/fairy_lora@v1.0.0/fairy.safetensors") == nested
    assert resolve_model_file(settings, f"file:{local}") == local
    with pytest.raises(ModelsMissingError, match="facechain-bot models fetch"):
        resolve_model_file(settings, "modelscope:YorickHe/other_lora/other.safetensors")


def test_fetch_models_writes_the_layout_the_resolver_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    calls: list[tuple[str, dict[str, object]]] = []

    def hf_download(repo_id: str, **kwargs: object) -> str:
        calls.append((repo_id, kwargs))
        return str(kwargs["local_dir"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", hf_download)
    with serve_hub(tmp_path / "hub") as (endpoint, state):
        state.add(
            "ly261666/cv_portrait_model",
            "v2.0",
            {
                "film/film/model_index.json": b"{}",
                "film/film/unet/diffusion_pytorch_model.safetensors": b"weights",
                "film/film/unet/diffusion_pytorch_model.ckpt": b"a pickle: not fetched",
                "other/model_index.json": b"{}",
            },
        )
        settings = tiny_settings("ly261666/cv_portrait_model/film/film", tmp_path, modelscope_endpoint=endpoint)
        paths = fetch_models(settings, ["ly261666/cv_portrait_model/film/film", "hf:org/name/lora.safetensors"])

    assert paths == [
        settings.models_dir / "ly261666" / "cv_portrait_model",
        settings.models_dir / "org" / "name",
    ]
    base = paths[0] / "film" / "film"
    assert (base / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == b"weights"
    assert not (base / "unet" / "diffusion_pytorch_model.ckpt").exists()
    assert not (paths[0] / "other").exists(), "only the sub folder the reference names"
    assert resolve_base_model(settings) == base
    ((repo, kwargs),) = calls
    assert (repo, kwargs["allow_patterns"], Path(str(kwargs["local_dir"]))) == (
        "org/name",
        ["lora.safetensors"],
        paths[1],
    )


# ------------------------------------------------------------------------------------- devices
def test_device_and_dtype_choice_on_cpu(tmp_path: Path) -> None:
    auto = tiny_settings("unused", tmp_path, device="cpu", dtype="auto")
    assert devices.pick_device(auto) == torch.device("cpu")
    assert devices.pick_dtype(auto, torch.device("cpu"), "train") == torch.float32
    assert devices.pick_dtype(auto, torch.device("cpu"), "infer") == torch.float32
    forced = tiny_settings("unused", tmp_path, dtype="bf16")
    assert devices.pick_dtype(forced, torch.device("cpu"), "infer") == torch.bfloat16
    if not torch.cuda.is_available():
        assert devices.pick_device(tiny_settings("unused", tmp_path, device="auto")).type == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA"):
            devices.pick_device(tiny_settings("unused", tmp_path, device="cuda:0"))


def test_out_of_memory_is_classified() -> None:
    assert devices.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert devices.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not devices.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not devices.is_out_of_memory(ValueError("out of memory"))
    assert devices.DeviceOutOfMemory.error_code == "out_of_memory"


def test_a_cloned_pipeline_computes_the_same_but_owns_its_weights(tiny_pipe: object) -> None:
    from pipeline.models import clone_pipeline

    pipe = tiny_pipe
    clone = clone_pipeline(pipe, torch.float32)  # type: ignore[arg-type]
    unet = pipe.unet  # type: ignore[attr-defined]
    sample = torch.randn(1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        before = unet(sample, 10, hidden).sample
        assert torch.allclose(clone.unet(sample, 10, hidden).sample, before, atol=1e-5)
        clone.unet.conv_in.weight.add_(1.0)

        assert torch.allclose(unet(sample, 10, hidden).sample, before, atol=1e-5), "the clone must not share weights"
    assert clone.tokenizer is pipe.tokenizer and clone.scheduler is not pipe.scheduler  # type: ignore[attr-defined]
    assert not any(p.requires_grad for p in clone.unet.parameters())
