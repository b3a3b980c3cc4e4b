#!/usr/bin/env python3
"""Times the project's real pipeline code on a GPU at full SD 1.5 size (random weights: timing does not
depend on weight values), for docs/benchmarks.md.

Run it on the GPU machine in the same call as the reference script, so that ratios compare one card:

    python3 bench/gpu_bench.py --out $OUT [--sections cold,train,generate,switch] [--train-samples 800]

Each result is one JSON line in OUT/bench.jsonl; a table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS: list[dict[str, Any]] = []


def record(section: str, name: str, **values: Any) -> None:
    row = {"section": section, "name": name, **values}
    RESULTS.append(row)
    with open(Path(ARGS.out) / "bench.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print("RESULT", json.dumps(row), flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/bench_out")
    parser.add_argument("--sections", default="cold,train,generate,switch")
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--train-samples", type=int, default=800, help="FaceChain recipe: 200 a photo, capped at 800")
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--work", default="/tmp/facechain-bench")
    return parser.parse_args()


ARGS = parse_args()


def main() -> None:
    import torch
    from PIL import Image

    from pipeline import jobs
    from pipeline.config import WorkerSettings
    from pipeline.devices import pick_device, pick_dtype
    from pipeline.generate import PortraitGenerator
    from pipeline.models import load_base_pipeline, make_random_pipeline
    from pipeline.train import TrainArgs, train_lora
    from tests.pipeline import photos

    Path(ARGS.out).mkdir(parents=True, exist_ok=True)
    sections = set(ARGS.sections.split(","))
    work = Path(ARGS.work)
    work.mkdir(parents=True, exist_ok=True)
    record(
        "env", "env", gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        torch=torch.__version__, python=sys.version.split()[0],
    )  # fmt: skip

    started = time.perf_counter()
    model = work / "sd15"
    if not (model / "model_index.json").exists():
        make_random_pipeline(model, full_size=True)
    record("setup", "random_sd15_written", seconds=round(time.perf_counter() - started, 1))

    batch = ARGS.train_batch
    settings = WorkerSettings(
        _env_file=None,
        base_model=str(model),
        data_dir=work / "data",
        models_dir=work / "models",
        # The recipe counts samples; at batch B that is samples / B optimizer steps.
        max_train_steps=max(1, ARGS.train_samples // batch),
        steps_per_photo=max(1, 200 // batch),
        train_batch_size=batch,
        inference_steps=ARGS.steps,
        candidates=ARGS.candidates,
    )  # type: ignore[call-arg]
    device = pick_device(settings)

    cuda = torch.cuda.is_available()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peak() -> float:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else 0.0

    def reset_peak() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    started = time.perf_counter()
    infer_pipe = load_base_pipeline(settings, device, pick_dtype(settings, device, "infer"))
    train_pipe = load_base_pipeline(settings, device, pick_dtype(settings, device, "train"))
    sync()
    record("cold", "both_pipelines_loaded", seconds=round(time.perf_counter() - started, 2),
           gib=round(torch.cuda.memory_allocated() / 2**30, 2) if cuda else 0.0)  # fmt: skip

    face_lora = work / "face.safetensors"
    if "train" in sections or not face_lora.exists():
        images = [
            Image.fromarray(img).resize((512, 512)) for img in photos.same_person_set(photos.astronaut())[: ARGS.photos]
        ]
        args = TrainArgs.from_settings(settings)
        reset_peak()
        losses: list[float] = []
        started = time.perf_counter()
        result = train_lora(train_pipe, images, "<fcsks>, a beautiful woman", args, face_lora,
                            on_progress=lambda step, total, loss: losses.append(loss))  # fmt: skip
        sync()
        total = time.perf_counter() - started
        samples = result.steps * batch
        record(
            "train", f"train_lora_b{batch}", seconds=round(total, 2), steps=result.steps, samples=samples,
            samples_per_s=round(samples / total, 1), ms_per_step=round(total / result.steps * 1e3, 1),
            final_loss=round(result.final_loss, 5), mean_loss_last_20=round(statistics.fmean(losses[-20:]), 5),
            peak_gib=peak(),
        )  # fmt: skip

    style = jobs.StyleSpec(name="suit", prompt="(business suit:1.2)")
    for fuse in (False, True):
        if "generate" not in sections:
            break
        generator = PortraitGenerator(infer_pipe, settings, fuse=fuse)
        times = []
        for _ in range(3):
            reset_peak()
            started = time.perf_counter()
            made = generator.generate(face_lora, style, None, "<fcsks>, a beautiful woman", 4, ARGS.candidates, seed=1)
            sync()
            times.append(time.perf_counter() - started)
        record(
            "generate", f"candidates_{ARGS.candidates}x{ARGS.steps}_{'fused' if fuse else 'unfused'}",
            seconds_median=round(statistics.median(times), 2), seconds_all=[round(t, 2) for t in times],
            images=len(made), peak_gib=peak(),
        )  # fmt: skip

    if "switch" in sections:
        generator = PortraitGenerator(infer_pipe, settings, fuse=False)
        copies = []
        for i in range(4):
            target = work / f"face_{i}.safetensors"
            target.write_bytes(face_lora.read_bytes())
            copies.append(target)
        times = []
        for path in copies:
            started = time.perf_counter()
            generator.generate(path, style, None, "<fcsks>, a woman", 1, 1, seed=1, steps=1, batch_size=1)
            sync()
            times.append(time.perf_counter() - started)
        record("switch", "one_step_job_with_a_new_face_lora", ms_median=round(statistics.median(times[1:]) * 1e3, 1))

    print("\n==== SUMMARY ====")
    for row in RESULTS:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
