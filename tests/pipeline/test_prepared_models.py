"""The prepared copy of the base model (FACECHAIN_PREPARED_MODEL_CACHE): written once, read on restart."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pipeline.models import load_base_pipeline
from tests.pipeline.tiny import tiny_settings
from tests.storage.test_file_modes import not_private


def _copies(models_dir: Path) -> list[Path]:
    root = models_dir / ".prepared"
    return sorted(p for p in root.iterdir() if (p / "prepared.json").is_file()) if root.is_dir() else []


def _same_weights(a: object, b: object) -> bool:
    for part in ("unet", "vae", "text_encoder"):
        left, right = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        if left.keys() != right.keys() or not all(torch.equal(left[k], right[k]) for k in left):
            return False
    return True


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model: these tests change its files."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "base"))


def test_first_load_writes_the_converted_copy_and_a_restart_reads_it(
    model_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tiny_settings(model_copy, tmp_path)
    caplog.set_level(logging.INFO, logger="pipeline.prepared_models")

    first = load_base_pipeline(settings, "cpu", torch.bfloat16)
    [copy] = _copies(settings.models_dir)
    assert "written to" in caplog.text
    # The copy holds the weights as they were converted: in the inference dtype, as safetensors.
    with safe_open(str(copy / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        key = next(iter(handle.keys()))
        assert handle.get_tensor(key).dtype == torch.bfloat16
    assert not_private(settings.models_dir / ".prepared") == {}, "the service's own files are 0600, folders 0700"
    caplog.clear()

    restarted = load_base_pipeline(settings, "cpu", torch.bfloat16)

    assert "read from its prepared copy" in caplog.text and "written to" not in caplog.text
    assert _same_weights(first, restarted)
    assert type(restarted.scheduler).__name__ == "DPMSolverSinglestepScheduler"  # the recipe's
    assert restarted.tokenizer("a portrait").input_ids == first.tokenizer("a portrait").input_ids
    assert _copies(settings.models_dir) == [copy]


def test_a_changed_base_model_or_dtype_gets_its_own_copy_and_old_ones_are_pruned(
    model_copy: Path, tmp_path: Path
) -> None:
    settings = tiny_settings(model_copy, tmp_path)
    load_base_pipeline(settings, "cpu", torch.float32)
    load_base_pipeline(settings, "cpu", torch.bfloat16)
    assert len(_copies(settings.models_dir)) == 2

    # New weights in the base model's folder: the old copies must not be read for it.
    config = model_copy / "unet" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text())))
    reloaded = load_base_pipeline(settings, "cpu", torch.float32)

    copies = _copies(settings.models_dir)
    assert len(copies) == 2, "only the two newest copies are kept"
    assert reloaded.unet.dtype == torch.float32


def test_a_broken_copy_is_replaced_from_the_original(
    model_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tiny_settings(model_copy, tmp_path)
    original = load_base_pipeline(settings, "cpu", torch.float32)
    [copy] = _copies(settings.models_dir)
    (copy / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")

    loaded = load_base_pipeline(settings, "cpu", torch.float32)

    assert "cannot be read" in caplog.text
    assert _same_weights(original, loaded)
    [rewritten] = _copies(settings.models_dir)
    assert _same_weights(original, load_base_pipeline(settings, "cpu", torch.float32))
    assert (rewritten / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size > 1000


def test_an_unwritable_models_folder_costs_the_copy_not_the_model(
    model_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tiny_settings(model_copy, tmp_path)
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / ".prepared").write_text("a file where the folder should be")

    pipe = load_base_pipeline(settings, "cpu", torch.float32)

    assert pipe.unet is not None
    assert "could not write a prepared copy" in caplog.text


def test_switched_off_nothing_is_written(model_copy: Path, tmp_path: Path) -> None:
    settings = tiny_settings(model_copy, tmp_path, prepared_model_cache=False)
    load_base_pipeline(settings, "cpu", torch.float32)
    assert not (settings.models_dir / ".prepared").exists()
