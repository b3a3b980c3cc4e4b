"""torch.compile of the inference UNet (FACECHAIN_TORCH_COMPILE) on the tiny pipeline.

The compile runs with the ``aot_eager`` backend here: Dynamo traces the real UNet and AOT autograd
runs the traced graph, without Inductor's code generation (minutes on this CPU). Inductor itself,
with LoRAs fused in place and a face switch without recompiling, is checked on the GPU machine
(``bench/gpu_bench.py --sections compilecheck``; docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from pipeline.config import WorkerSettings
from pipeline.generate import PortraitGenerator
from pipeline.unet_compile import compile_unet
from tests.pipeline.tiny import generate_with, max_pixel_diff


def _compiled(pipe: object, settings: WorkerSettings, backend: object = "aot_eager") -> PortraitGenerator:
    torch._dynamo.reset()
    on = settings.model_copy(update={"torch_compile": "on"})
    return PortraitGenerator(pipe, on, compile_backend=backend)  # type: ignore[arg-type]


def _graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def test_switched_off_or_inductor_on_a_cpu_the_unet_stays_plain(tiny_pipe: object, tiny_env: WorkerSettings) -> None:
    assert compile_unet(tiny_pipe.unet, "off") is None  # type: ignore[attr-defined]
    off = PortraitGenerator(tiny_pipe, tiny_env.model_copy(update={"torch_compile": "off"}))  # type: ignore[arg-type]
    # On by default, but Inductor on a CPU would spend minutes compiling for seconds of gain.
    assert tiny_env.torch_compile == "on"
    cpu_inductor = PortraitGenerator(tiny_pipe, tiny_env)  # type: ignore[arg-type]
    assert off.unet.compiled is None and cpu_inductor.unet.compiled is None
    assert off.compiled_ready.is_set() and cpu_inductor.compiled_ready.is_set()


def test_compiled_unet_gives_the_plain_portraits_follows_a_face_switch_and_compiles_two_shapes_only(
    tiny_pipe: object, tiny_env: WorkerSettings, loras: dict[str, Path]
) -> None:
    plain = PortraitGenerator(tiny_pipe, tiny_env)  # type: ignore[arg-type]
    expected = {face: generate_with(plain, loras, face) for face in ("face1", "face2")}
    compiled = _compiled(tiny_pipe, tiny_env)
    before = _graphs()

    first = generate_with(compiled, loras, "face1")
    after_first = _graphs()
    second = generate_with(compiled, loras, "face2")
    again = generate_with(compiled, loras, "face1")

    assert max_pixel_diff(first, expected["face1"]) <= 1
    assert max_pixel_diff(second, expected["face2"]) <= 1
    assert max_pixel_diff(again, first) == 0
    assert max_pixel_diff(second, first) > 10, "the second face must change the portraits"
    # Batches of 2 and 1 candidates: two shapes traced on the first job, none added by the switch.
    assert after_first - before == 2 and _graphs() == after_first
    assert compiled.unet.compiled is not None

    # A third shape (batches of 3) runs on the plain UNet: no compile in the middle of a user's job.
    odd = generate_with(compiled, loras, "face1", batch_size=3)
    assert _graphs() == after_first
    assert max_pixel_diff(odd, generate_with(plain, loras, "face1", batch_size=3)) == 0


def test_a_compiler_failure_leaves_generation_on_the_plain_unet(
    tiny_pipe: object, tiny_env: WorkerSettings, loras: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    def broken_backend(graph: object, inputs: object) -> object:
        raise RuntimeError("no C compiler in this image")

    plain = PortraitGenerator(tiny_pipe, tiny_env)  # type: ignore[arg-type]
    compiled = _compiled(tiny_pipe, tiny_env, backend=broken_backend)

    made = generate_with(compiled, loras)

    assert max_pixel_diff(made, generate_with(plain, loras)) == 0
    assert compiled.unet.compiled is None
    assert "compiled UNet failed" in caplog.text


def test_background_compile_is_taken_up_by_the_next_job(
    tiny_pipe: object, tiny_env: WorkerSettings, loras: dict[str, Path]
) -> None:
    plain = PortraitGenerator(tiny_pipe, tiny_env)  # type: ignore[arg-type]
    compiled = _compiled(tiny_pipe, tiny_env)
    before = _graphs()

    compiled.warm_up(steps=1, background_compile=True)
    assert compiled.compiled_ready.wait(timeout=120)

    # The warm-up itself ran uncompiled; the thread compiled the default job shape and swapped in.
    assert _graphs() - before == 1
    assert compiled.unet.compiled is not None
    made = generate_with(compiled, loras, candidates=2, batch_size=2)
    assert max_pixel_diff(made, generate_with(plain, loras, candidates=2, batch_size=2)) <= 1
    assert _graphs() - before == 1, "the job ran on the shape compiled in the background"


def test_a_deferred_background_compile_starts_only_when_asked(
    tiny_pipe: object, tiny_env: WorkerSettings, loras: dict[str, Path]
) -> None:
    # The worker captures the training step between the UNet's warm-up and its compile.
    compiled = _compiled(tiny_pipe, tiny_env)
    before = _graphs()

    compiled.warm_up(steps=1, background_compile=True, defer_compile=True)
    assert not compiled.compiled_ready.wait(timeout=0.5)
    assert _graphs() == before, "nothing compiled before start_background_compile"
    compiled.start_background_compile()
    assert compiled.compiled_ready.wait(timeout=120)
    assert _graphs() - before == 1 and compiled.unet.compiled is not None


def test_a_stopping_worker_starts_no_compile_and_its_waiters_go_on(tiny_pipe: object, tiny_env: WorkerSettings) -> None:
    # SIGTERM during the warm-up: the compile it prepared must not start (it would outlive the worker).
    compiled = _compiled(tiny_pipe, tiny_env)
    before = _graphs()
    compiled.warm_up(steps=1, background_compile=True, defer_compile=True)
    assert compiled.background.stop(5) == []
    compiled.start_background_compile()
    assert compiled.compiled_ready.is_set(), "whoever waits for the compile is not left waiting"
    assert compiled.unet.compiled is None and _graphs() == before, "nothing was compiled"


def test_with_no_compile_prepared_starting_one_just_reports_ready(tiny_pipe: object, tiny_env: WorkerSettings) -> None:
    # A warm-up that failed before preparing the compile must not leave waiters hanging.
    compiled = _compiled(tiny_pipe, tiny_env)
    assert not compiled.compiled_ready.is_set()
    compiled.start_background_compile()
    assert compiled.compiled_ready.is_set()
