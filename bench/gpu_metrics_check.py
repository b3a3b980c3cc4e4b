#!/usr/bin/env python3
"""GPU check of the worker's GPU memory metrics (run on the GPU machine: ``python3 bench/gpu_metrics_check.py``).

Scrapes ``GpuMemoryCollector`` before CUDA is used, after a 1 GiB tensor, and after freeing it. The
GPU machine's image has torch and prometheus-client but not pydantic: the job contract is stubbed.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:
    import pydantic  # noqa: F401
except ImportError:
    stub = types.ModuleType("pipeline.jobs")
    stub.TRAIN_QUEUE, stub.GENERATE_QUEUE, stub.BOT_QUEUE = "train", "generate", "bot"  # type: ignore[attr-defined]
    stub.ErrorCode = object  # type: ignore[attr-defined]
    sys.modules["pipeline.jobs"] = stub

import torch
from prometheus_client import CollectorRegistry, generate_latest

from pipeline.worker_metrics import GpuMemoryCollector


def scrape(registry: CollectorRegistry, when: str) -> None:
    lines = [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")]
    print(f"--- {when}")
    print("\n".join(lines))


registry = CollectorRegistry()
registry.register(GpuMemoryCollector())
scrape(registry, "torch imported, CUDA not used yet")
block = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
scrape(registry, "a 1 GiB tensor on cuda:0")
del block
scrape(registry, "the tensor freed (torch keeps it reserved)")
torch.cuda.empty_cache()
scrape(registry, "after empty_cache")
