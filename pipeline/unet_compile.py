"""torch.compile of the inference UNet (``FACECHAIN_TORCH_COMPILE``), its caches kept on a volume.

Inductor fuses the UNet's elementwise work (group norms, activations, residual adds) into fewer,
larger kernels; the matmuls and convolutions stay cuBLAS/cuDNN (a /generate on an H200: 2.79 →
2.07 s). The first compile of SD 1.5's UNet took 40–80 s there, so its results must outlive the
process: Inductor writes them under ``TORCHINDUCTOR_CACHE_DIR`` (the ``compile-cache`` volume in
docker-compose.yml), and a restarted worker reads them back (about 10 s of tracing remains). The
worker compiles in the background (:meth:`pipeline.generate.PortraitGenerator.warm_up`): jobs run
on the plain UNet until the compiled one is ready.

Weights stay graph *inputs* (Inductor's freezing is off), so LoRAs fused into them in place
(:class:`pipeline.lora_merge.WeightFuser`) change what the compiled UNet computes without a
recompile, as they do for a captured CUDA graph. Shapes are static: every new input shape is a new
compile, so :class:`pipeline.cuda_graphs.GraphedUNet` sends only the first few shapes it sees (the
warm-up's job shape first) to the compiled UNet and everything else to the plain one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from pipeline.cuda_graphs import UNetForward

CompileMode = Literal["off", "on", "tuned"]


def configure_inductor(tuned: bool) -> None:
    """Inductor settings for a diffusion UNet (as diffusers' own torch.compile guide sets them).

    ``tuned`` adds coordinate-descent tuning of every generated kernel's launch parameters: a
    longer first compile (cached like the rest) for somewhat faster kernels.
    """
    import torch._inductor.config as inductor

    # 1×1 convolutions (the attention blocks' proj_in / proj_out) as matmuls, which fuse better.
    inductor.conv_1x1_as_mm = True
    inductor.coordinate_descent_tuning = tuned
    inductor.coordinate_descent_check_all_directions = tuned
    # FX graph and AOT-autograd caches on disk: what a restart reuses. Both are on by default in
    # recent torch; stated here because the restart target depends on them.
    inductor.fx_graph_cache = True


def compile_unet(
    unet: torch.nn.Module, mode: CompileMode, backend: str | Callable[..., Any] = "inductor"
) -> UNetForward | None:
    """``unet(sample, timestep, hidden)`` compiled with static shapes; None when ``mode`` is off.

    Nothing is compiled here: the first call per shape compiles (or loads from the cache).
    ``backend`` other than inductor is for tests (``aot_eager`` traces without generating code).
    """
    if mode == "off":
        return None
    if backend == "inductor":
        configure_inductor(tuned=mode == "tuned")
    compiled = torch.compile(unet, fullgraph=True, dynamic=False, backend=backend)

    def forward(sample: torch.Tensor, timestep: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = compiled(sample, timestep, encoder_hidden_states=hidden, return_dict=False)[0]
        return output

    return forward
