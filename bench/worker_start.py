#!/usr/bin/env python3
"""One worker process from start to ready, then (optionally) a user's /done and a /generate.

Run by bench/gpu_bench.py's ``cold`` section in a fresh process each time (a cold start, then a
restart that finds the caches the first one wrote). Prints one ``RESULT {json}`` line:

- ``imports_s``: torch, then diffusers' pipeline classes (what every worker start pays first);
- ``ready_s`` (taking jobs), ``warmed_up_s`` (graphs captured, in the background) and the runner's
  own ``parts`` (face models, pipelines, warm-ups); ``compiled_ready_s``
  when the compiled UNet (``FACECHAIN_TORCH_COMPILE``), made in the background, is ready, and
  ``train_compiled_ready_s`` when the compiled training step (``FACECHAIN_TRAIN_COMPILE``) is
  (``--jobs-when unet-compiled``: the jobs run before that, while the training step compiles);
- with ``--train``: ``done_s``, the worker's train job on 5 photos as the queue runs it (preprocess,
  the face LoRA on FaceChain's 800 samples, saving the LoRA and template to the blob store), with
  the time each stage was first reported;
- with ``--generate``: ``generate_s``, the worker's generate job with that LoRA (10 candidates,
  ranking and NSFW check as configured).

Settings come from the environment like a real worker's (``FACECHAIN_*``), plus ``--model``.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="base model folder")
    parser.add_argument("--work", required=True, help="data and models folders go here")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--generate", action="store_true")
    parser.add_argument(
        "--jobs-when", choices=("compiled", "unet-compiled"), default="compiled",
        help="run the jobs once everything is compiled, or as soon as the UNet is (the training step "
        "still compiling in the background: what a /done meets on a deployment's first start)",
    )  # fmt: skip
    args = parser.parse_args()

    result: dict[str, Any] = {}
    import torch

    result["import_torch_s"] = round(time.perf_counter() - STARTED, 2)
    from diffusers import StableDiffusionPipeline  # noqa: F401

    result["imports_s"] = round(time.perf_counter() - STARTED, 2)

    from pipeline import jobs
    from pipeline.config import WorkerSettings
    from pipeline.control import StageControl
    from pipeline.runner import PipelineRunner
    from storage.blobs import LocalBlobStore

    work = Path(args.work)
    settings = WorkerSettings(base_model=args.model, data_dir=work / "data", models_dir=work / "models")
    blobs = LocalBlobStore(settings.blob_dir)
    runner = PipelineRunner(settings, blobs)
    cuda = torch.cuda.is_available()
    result["ready_s"] = round(time.perf_counter() - STARTED, 2)
    result["allocated_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2) if cuda else 0.0
    print("READY", result["ready_s"], flush=True)
    runner.warmed_up.wait(timeout=500)
    result["warmed_up_s"] = round(time.perf_counter() - STARTED, 2)
    result["parts"] = runner.startup_seconds
    if runner.generator is not None:
        # A compiled UNet is made ready in the background; the jobs below should use it.
        runner.generator.compiled_ready.wait(timeout=500)
        result["compiled_ready_s"] = round(time.perf_counter() - STARTED, 2)
    if runner.trainer is not None and args.jobs_when == "compiled":
        # So is the compiled training step, after the UNet's.
        runner.trainer.compiled_ready.wait(timeout=500)
        result["train_compiled_ready_s"] = round(time.perf_counter() - STARTED, 2)
    result["jobs_when"] = args.jobs_when
    result["train_compiled_before_jobs"] = runner.trainer is None or runner.trainer.compiled_ready.is_set()

    if args.train or args.generate:
        from tests.pipeline import photos

        keys = []
        for i, image in enumerate(photos.same_person_set(photos.astronaut())[:5]):
            keys.append(f"users/1/photos/1/{i}.png")
            blobs.put_bytes(keys[-1], photos.encode(image))
        stages: dict[str, float] = {}
        started = time.perf_counter()

        def report(stage: jobs.Stage, fraction: float, message: str) -> None:
            stages.setdefault(str(stage.value), round(time.perf_counter() - started, 2))

        control = StageControl(report=report, stop_event=threading.Event())
        request = jobs.TrainRequest(
            run_id="t-bench-1", user_id=1, model_id=1, photo_keys=keys, subject=jobs.Subject.WOMAN
        )
        trained = runner.train(request, control)
        if cuda:
            torch.cuda.synchronize()
        result["done_s"] = round(time.perf_counter() - started, 2)
        result["done_stage_first_report_s"] = stages
        result["train_ok"] = trained.ok
        result["train_steps"] = trained.steps
        result["train_error"] = None if trained.ok else trained.message
        if args.generate and trained.ok:
            started = time.perf_counter()
            made = runner.generate(
                jobs.GenerateRequest(
                    run_id="g-bench-1", user_id=1, model_id=1, lora_key=trained.lora_key or "",
                    template_key=trained.template_key, trigger=trained.trigger or "",
                    style=jobs.StyleSpec(name="suit", prompt="(business suit:1.2), office"),
                    count=4, candidates=settings.candidates, seed=1,
                ),
                StageControl(stop_event=threading.Event()),
            )  # fmt: skip
            result["generate_s"] = round(time.perf_counter() - started, 2)
            result["generate_ok"] = made.ok
    if runner.trainer is not None and "train_compiled_ready_s" not in result:
        runner.trainer.compiled_ready.wait(timeout=500)
        result["train_compiled_ready_s"] = round(time.perf_counter() - STARTED, 2)
    if cuda:
        result["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        # What the process holds between jobs (the caching allocator's reserve, graph pools included).
        result["reserved_after_jobs_gib"] = round(torch.cuda.memory_reserved() / 2**30, 2)
    print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
