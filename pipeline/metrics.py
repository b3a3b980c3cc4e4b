"""Prometheus metrics shared by the bot and the worker: the HTTP endpoint and the queue depths.

Each process serves ``/metrics`` on its own port (``FACECHAIN_BOT_METRICS_PORT``,
``FACECHAIN_WORKER_METRICS_PORT``; unset = no endpoint). Values that live elsewhere (queue depths in
Redis, runs in the bot's database) are read when Prometheus scrapes, on the process's own event loop,
so they are never stale and no sampling task runs between scrapes. The metric names are listed in
docs/scaling.md.

torch-free and bot-free: the bot's runtime imports it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from pipeline import jobs

log = logging.getLogger("facechain.metrics")

#: A scrape waits at most this long for a value read on the event loop; past it the value is left out.
SCRAPE_TIMEOUT_S = 3.0

#: The queues by their short name (the ``queue`` label).
QUEUES: dict[str, str] = {"train": jobs.TRAIN_QUEUE, "generate": jobs.GENERATE_QUEUE, "bot": jobs.BOT_QUEUE}


class MetricsServerError(RuntimeError):
    """The metrics port cannot be served (in use, or not allowed); the message names the setting."""


class MetricsServer:
    """The ``/metrics`` HTTP endpoint of this process, on a thread of its own."""

    def __init__(self, port: int, setting: str, registry: CollectorRegistry = REGISTRY) -> None:
        try:
            self._server, self._thread = start_http_server(port, registry=registry)
        except OSError as exc:
            raise MetricsServerError(
                f"facechain-bot: cannot serve metrics on port {port} ({exc.strerror or exc}); "
                f"choose a free port in {setting}, or leave it unset for no metrics endpoint"
            ) from None
        self.port = int(self._server.server_address[1])
        log.info("metrics at http://0.0.0.0:%d/metrics", self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


Labels = tuple[str, ...]


class LoopGauge(Collector):
    """A gauge family whose values an async function reads on the process's event loop at scrape time.

    The scrape runs on the HTTP server's thread; it hands ``read`` to ``loop`` and waits up to
    :data:`SCRAPE_TIMEOUT_S`. A value that cannot be read (Redis down, the loop busy) is left out of
    that scrape (the family has no sample) rather than shown stale, and the reason is logged.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Iterable[str],
        read: Callable[[], Awaitable[Mapping[Labels, float]]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._read = read
        self._loop = loop

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Without describe(), registering would call collect() from the loop's own thread and wait on it.
        return [GaugeMetricFamily(self._name, self._documentation, labels=self._labels)]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        try:
            values = asyncio.run_coroutine_threadsafe(_awaited(self._read), self._loop).result(SCRAPE_TIMEOUT_S)
        except Exception as exc:
            log.warning("metric %s not read for this scrape: %s", self._name, exc or type(exc).__name__)
            return [family]  # its HELP and TYPE, no sample
        for labels, value in sorted(values.items()):
            family.add_metric(list(labels), value)
        return [family]


async def _awaited(read: Callable[[], Awaitable[Mapping[Labels, float]]]) -> Mapping[Labels, float]:
    return await read()


def queue_depth_gauge(redis: Any, queues: Iterable[str], loop: asyncio.AbstractEventLoop) -> LoopGauge:
    """``facechain_queue_depth{queue}``: jobs waiting in each named queue (``train``, ``generate``, ``bot``)."""
    names = list(queues)

    async def read() -> dict[Labels, float]:
        return {(name,): float(await redis.zcard(QUEUES[name])) for name in names}

    return LoopGauge(
        "facechain_queue_depth", "Jobs waiting in a queue (read from Redis at scrape time).", ["queue"], read, loop
    )


class Registered:
    """Collectors registered for the lifetime of a ``with`` block (a process may run its loop twice)."""

    def __init__(self, *collectors: Collector, registry: CollectorRegistry = REGISTRY) -> None:
        self._collectors = collectors
        self._registry = registry

    def __enter__(self) -> Registered:
        for collector in self._collectors:
            self._registry.register(collector)
        return self

    def __exit__(self, *exc: object) -> None:
        for collector in self._collectors:
            self._registry.unregister(collector)
