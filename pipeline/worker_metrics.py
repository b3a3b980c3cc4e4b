"""The worker's Prometheus metrics: jobs (durations, failures by error code, running now), readiness,
and GPU memory. Served by :class:`pipeline.metrics.MetricsServer` when FACECHAIN_WORKER_METRICS_PORT
is set; the names are listed in docs/scaling.md.

GPU memory is read from torch at scrape time, only once the worker has imported torch, and only for
devices this process has used: on a CPU-only worker ``facechain_gpu_devices`` is 0 and
``facechain_gpu_memory_bytes`` has no samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterable

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline import jobs
from pipeline.metrics import MetricsServer, Registered, queue_depth_gauge

#: Seconds; a tiny-model job takes about 1 s, a full-size training on a GPU about a minute, on a CPU an hour.
DURATION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)

JOB_SECONDS = Histogram(
    "facechain_job_duration_seconds",
    "Time a job's stages ran, by kind (train, generate) and outcome (ok, failed).",
    ["kind", "outcome"],
    buckets=DURATION_BUCKETS,
)
JOB_FAILURES = Counter(
    "facechain_job_failures",
    "Jobs that ended with an error, by kind and error code (pipeline.jobs.ErrorCode).",
    ["kind", "code"],
)
JOBS_RUNNING = Gauge("facechain_jobs_running", "Jobs this worker is running now, by kind.", ["kind"])
JOBS_RESENT = Counter(
    "facechain_jobs_resent",
    "Jobs whose earlier attempt had already finished: the stored outcome was sent again, no work done.",
    ["kind"],
)
WORKER_READY = Gauge("facechain_worker_ready", "1 once the models are loaded and the worker takes jobs.")
STARTUP_SECONDS = Gauge("facechain_worker_startup_seconds", "Seconds the worker took to load its models.")

for _kind in ("train", "generate"):
    JOBS_RUNNING.labels(_kind)
    JOB_SECONDS.labels(_kind, "ok")  # a count of 0 is shown before the first job, not nothing


def job_finished(kind: str, error: jobs.ErrorCode | None, seconds: float) -> None:
    """Record a job that ran its stages (not one that only re-sent an earlier outcome)."""
    JOB_SECONDS.labels(kind, "ok" if error is None else "failed").observe(seconds)
    if error is not None:
        JOB_FAILURES.labels(kind, error.value).inc()


class GpuMemoryCollector(Collector):
    """``facechain_gpu_devices`` and ``facechain_gpu_memory_bytes{device,kind}`` from torch at scrape time.

    ``kind`` is ``allocated`` (tensors), ``reserved`` (torch's caching allocator) and, for devices
    this process has used, ``total`` and ``free`` (the driver's view, other processes included).
    Nothing imports torch here: before the worker has, and on the bot, the device count is 0.
    """

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()[:2]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        devices, memory = self._families()
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            devices.add_metric([], 0)
            return [devices, memory]
        count = torch.cuda.device_count()
        devices.add_metric([], count)
        current = torch.cuda.current_device() if torch.cuda.is_initialized() else None
        for index in range(count):
            name = f"cuda:{index}"
            reserved = torch.cuda.memory_reserved(index)
            memory.add_metric([name, "allocated"], torch.cuda.memory_allocated(index))
            memory.add_metric([name, "reserved"], reserved)
            if reserved or index == current:
                # Asking the driver needs a CUDA context: only on a device this process already uses.
                free, total = torch.cuda.mem_get_info(index)
                memory.add_metric([name, "free"], free)
                memory.add_metric([name, "total"], total)
        return [devices, memory]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("facechain_gpu_devices", "CUDA devices this worker sees (0 on a CPU-only worker)."),
            GaugeMetricFamily(
                "facechain_gpu_memory_bytes",
                "GPU memory by device and kind (allocated, reserved by torch; free, total on the device).",
                labels=["device", "kind"],
            ),
        ]


@contextlib.asynccontextmanager
async def worker_metrics(port: int | None, queues: Iterable[str], redis_url: str) -> AsyncIterator[int | None]:
    """Serve ``/metrics`` on ``port`` while the block runs (nothing when None); yields the port served.

    ``facechain_worker_ready`` is 0 until the caller sets it, once its models are loaded.
    """
    if port is None:
        yield None
        return
    from redis.asyncio import Redis

    # A hung Redis must not hang a scrape: the same timeouts as the job queues' clients.
    redis = Redis.from_url(
        redis_url, socket_connect_timeout=jobs.REDIS_CONNECT_TIMEOUT_S, socket_timeout=jobs.REDIS_COMMAND_TIMEOUT_S
    )
    loop = asyncio.get_running_loop()
    server = MetricsServer(port, "FACECHAIN_WORKER_METRICS_PORT")
    try:
        with Registered(GpuMemoryCollector(), queue_depth_gauge(redis, queues, loop)):
            yield server.port
    finally:
        WORKER_READY.set(0)
        server.close()
        await redis.aclose()
