#!/usr/bin/env python3
"""Scale-out: N generate workers (one per GPU) on one Redis serve a burst of jobs from many users.

For issue 6: 40 /generate jobs from 20 users (2 each, each user with a face LoRA of their own) are
enqueued at once through the bot's own queue client; the bench times the burst with 1 worker and
with N workers, and checks that every job ran exactly once (each execution is logged in Redis by
the worker) and that every outcome reached the bot's queue (none lost).

    python3 bench/scale_out.py --out $OUT --workers 1,2                     # GPU machine, one per GPU
    python3 bench/scale_out.py --tiny --workers 1,2 --jobs 8 --users 4       # CPU: checks the harness

Where no Redis runs (the GPU machines), carry Debian's redis-server and pass its binary:
``apt-get download redis-server redis-tools libjemalloc2 liblzf1`` here, ``dpkg -x`` each there into
one folder, then ``--redis-server DIR/usr/bin/redis-server`` (with ``LD_LIBRARY_PATH=DIR/usr/lib/x86_64-linux-gnu``).
Each worker process sees one GPU (``CUDA_VISIBLE_DEVICES``); on the CPU they share the cores.
Results: OUT/scale_out.jsonl and a summary line per worker count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXECUTED = "facechain:bench:executed"
READY = "facechain:bench:ready"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/scale_out")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, e.g. 1,2")
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--redis-server", default=None, help="start this redis-server binary (port 6390)")
    parser.add_argument("--work", default="/tmp/facechain-scale")
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU: checks the harness only")
    parser.add_argument("--serve-worker", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def settings_for(args: argparse.Namespace) -> Any:
    from pipeline.config import WorkerSettings

    work = Path(args.work)
    tiny = {"device": "cpu", "dtype": "fp32", "resolution": 64} if args.tiny else {}
    return WorkerSettings(
        _env_file=None, base_model=str(work / ("tiny" if args.tiny else "sd15")), data_dir=work / "data",
        models_dir=work / "models", redis_url=args.redis_url, queues=["generate"], rank_faces=False,
        nsfw_check=False, inference_steps=args.steps, candidates=args.candidates, **tiny,
    )  # type: ignore[call-arg]  # fmt: skip


# ------------------------------------------------------------------------------------- a worker
def serve_worker(args: argparse.Namespace) -> None:
    """One worker process: the real runner, every execution logged, then arq on the generate queue."""
    from redis import Redis

    from pipeline.worker import build_runner, run_worker
    from storage.blob_config import open_blob_store

    settings = settings_for(args)
    blobs = open_blob_store(settings, settings.data_dir)
    runner = build_runner(settings, blobs)
    real_generate = runner.generate
    log = Redis.from_url(args.redis_url)

    def generate(request: Any, control: Any) -> Any:
        log.rpush(EXECUTED, f"{request.run_id} {args.serve_worker}")
        return real_generate(request, control)

    runner.generate = generate  # type: ignore[method-assign]
    generator = getattr(runner, "generator", None)
    if generator is not None:
        # The burst measures the steady state: the compiled UNet (made in the background) in use.
        generator.compiled_ready.wait(timeout=600)
    log.rpush(READY, str(args.serve_worker))
    asyncio.run(run_worker(settings, ctx={"runner": runner, "blobs": blobs}))


# ------------------------------------------------------------------------------------ the bench
def prepare(args: argparse.Namespace) -> list[str]:
    """The base model and one face LoRA per user in the blob store; their keys."""
    import torch

    from pipeline.devices import pick_device, pick_dtype
    from pipeline.models import load_base_pipeline, make_random_pipeline, make_tiny_pipeline
    from storage.blob_config import open_blob_store
    from tests.pipeline.tiny import random_lora_file

    settings = settings_for(args)
    model = Path(settings.base_model)
    if not (model / "model_index.json").exists():
        make_tiny_pipeline(model) if args.tiny else make_random_pipeline(model, full_size=True)
    device = pick_device(settings)
    pipe = load_base_pipeline(settings, device, pick_dtype(settings, device, "infer"))
    blobs = open_blob_store(settings, settings.data_dir)
    keys = []
    for user in range(args.users):
        key = f"users/{user + 1}/models/1/face_lora.safetensors"
        if not blobs.exists(key):
            random_lora_file(pipe, Path(args.work) / "face.tmp.safetensors", seed=user, scale=0.02)
            blobs.put_file(key, Path(args.work) / "face.tmp.safetensors")
        keys.append(key)
    del pipe
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return keys


async def burst(args: argparse.Namespace, workers: int, keys: list[str]) -> dict[str, Any]:
    from arq import create_pool

    from bot.queue import ArqJobQueue
    from pipeline import jobs
    from pipeline.worker import redis_settings

    redis = await create_pool(
        redis_settings(args.redis_url), job_serializer=jobs.serialize, job_deserializer=jobs.deserialize
    )
    await redis.flushdb()
    procs = _start_workers(args, workers)
    try:
        while await redis.llen(READY) < workers:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited during start-up")
            await asyncio.sleep(0.5)
        queue = ArqJobQueue(redis)
        style = jobs.StyleSpec(name="suit", prompt="(business suit:1.2), office")
        requests = [
            jobs.GenerateRequest(
                run_id=f"scale-{workers}-{n}",
                user_id=n % args.users + 1,
                model_id=1,
                lora_key=keys[n % args.users],
                trigger="a woman",
                style=style,
                count=4,
                candidates=args.candidates,
                seed=n,
            )
            for n in range(args.jobs)
        ]
        started = time.perf_counter()
        for request in requests:
            await queue.submit(request, attempt=1)
        while len(await redis.queued_jobs(queue_name=jobs.BOT_QUEUE)) < args.jobs:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker died during the burst")
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - started
        outcomes = [jobs.parse_outcome(job.args[0]) for job in await redis.queued_jobs(queue_name=jobs.BOT_QUEUE)]
        executed = [entry.decode().split() for entry in await redis.lrange(EXECUTED, 0, -1)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        await redis.aclose()
    runs = [run for run, _ in executed]
    expected = {r.run_id for r in requests}
    return {
        "workers": workers,
        "jobs": args.jobs,
        "users": args.users,
        "seconds": round(seconds, 2),
        "jobs_per_min": round(args.jobs / seconds * 60, 1),
        "ok_outcomes": sum(1 for o in outcomes if o.ok),
        "lost": len(expected - {o.run_id for o in outcomes}),
        "run_twice": len(runs) - len(set(runs)),
        "per_worker": {w: sum(1 for _, x in executed if x == w) for w in sorted({x for _, x in executed})},
    }


def _start_workers(args: argparse.Namespace, workers: int) -> list[subprocess.Popen[bytes]]:
    """Worker processes, each on its own GPU where there are GPUs."""
    gpus = _gpu_count()
    procs = []
    for index in range(workers):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        command = [sys.executable, __file__, "--serve-worker", str(index), *_passthrough(args)]
        procs.append(subprocess.Popen(command, env=env))
    return procs


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def _passthrough(args: argparse.Namespace) -> list[str]:
    values = ["--redis-url", args.redis_url, "--work", args.work, "--steps", str(args.steps)]
    values += ["--candidates", str(args.candidates)]
    return values + (["--tiny"] if args.tiny else [])


def main() -> None:
    args = parse_args()
    if args.serve_worker is not None:
        serve_worker(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = None
    if args.redis_server:
        server = subprocess.Popen([args.redis_server, "--port", "6390", "--save", "", "--appendonly", "no"])
        args.redis_url = "redis://127.0.0.1:6390/0"
        time.sleep(1.0)
    try:
        keys = prepare(args)
        results = []
        for count in (int(n) for n in args.workers.split(",")):
            row = asyncio.run(burst(args, count, keys))
            results.append(row)
            with open(out / "scale_out.jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print("RESULT", json.dumps(row), flush=True)
        base = results[0]["jobs_per_min"]
        for row in results:
            print(f"{row['workers']} worker(s): {row['jobs_per_min']} jobs/min ({row['jobs_per_min'] / base:.2f}×), "
                  f"lost {row['lost']}, run twice {row['run_twice']}")  # fmt: skip
    finally:
        if server is not None:
            server.terminate()


if __name__ == "__main__":
    main()
