"""The face LoRA's training step, kept on the training UNet from one job to the next.

Adding a peft adapter, building its optimizer, running eager warm-up steps and capturing the step
as a CUDA graph took 1–2 s of every training job, and a compiled step (``FACECHAIN_TRAIN_COMPILE``)
would be traced again for every new adapter. :class:`LoraTrainingStep` does all of that once: the
adapter, the fused AdamW and its state, the step's static inputs and the captured graph stay for
the worker's life. A job calls :meth:`LoraTrainingStep.begin`, which puts the adapter back to its
initial weights (seeded, or a given initial LoRA) and zeroes the optimizer's state in place, so
every job trains from the same start as a fresh adapter would, then fills the inputs and replays.

The step is the one of diffusers' ``train_text_to_image_lora.py``: UNet forward under bf16
autocast, MSE on the target, backward, gradient clipping, AdamW; on CUDA without a loss scaler the
whole of it is replayed from one CUDA graph after ``warmup_steps`` eager steps (a step of SD 1.5 is
thousands of kernel launches: launch-bound when issued one by one).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from pipeline.cuda_graphs import CAPTURE_ERROR_MODE, CAPTURE_LOCK, UNetForward
from pipeline.devices import is_out_of_memory

if TYPE_CHECKING:
    from peft import LoraConfig

log = logging.getLogger(__name__)

#: The adapter name of the resident training adapter.
TRAIN_ADAPTER = "facechain_face_training"


def has_adapters(module: torch.nn.Module) -> bool:
    """True when peft adapter layers are present in ``module`` (a UNet or text encoder)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


@dataclass(frozen=True)
class StepSpec:
    """Everything a built step depends on; a job asking for another spec gets a new step."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    batch: int
    #: (channels, height, width) of a latent, and (tokens, width) of the caption's hidden states.
    latent_shape: tuple[int, ...]
    text_shape: tuple[int, ...]
    amp_dtype: torch.dtype | None
    max_grad_norm: float
    betas: tuple[float, float]
    weight_decay: float
    eps: float
    cuda_graph: bool
    warmup_steps: int


class LoraTrainingStep:
    """A LoRA adapter on ``unet`` with its optimizer and one training step, reused by many jobs.

    Fill :attr:`noisy`, :attr:`timesteps`, :attr:`target` (and :attr:`hidden` in :meth:`begin`)
    inside the ``fill`` callback of :meth:`run`: a captured graph reads its inputs from these tensors.
    :meth:`use_forward` replaces the plain UNet call (a compiled UNet, :mod:`pipeline.unet_compile`).
    """

    def __init__(self, unet: torch.nn.Module, spec: StepSpec) -> None:
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        if has_adapters(unet):
            raise RuntimeError("the UNet already carries LoRA adapters; remove them before training")
        self.unet = unet
        self.spec = spec
        self.device = unet.device
        #: What the step calls instead of the plain UNet (:meth:`use_forward`).
        self.forward: UNetForward | None = None
        self.config: LoraConfig = LoraConfig(
            r=spec.rank,
            lora_alpha=spec.alpha,
            init_lora_weights="gaussian",
            target_modules=list(spec.target_modules),
        )
        unet.add_adapter(self.config, adapter_name=TRAIN_ADAPTER)
        cast_training_params(unet, dtype=torch.float32)
        unet.train()
        self.params = [p for p in unet.parameters() if p.requires_grad]
        self._lora_pairs = self._lora_layers()
        self.use_graph = spec.cuda_graph and self.device.type == "cuda" and spec.amp_dtype != torch.float16
        self.optimizer = torch.optim.AdamW(
            self.params,
            # A captured optimizer step reads its learning rate from device memory.
            lr=torch.tensor(0.0, device=self.device) if self.use_graph else 0.0,
            betas=spec.betas,
            weight_decay=spec.weight_decay,
            eps=spec.eps,
            fused=self.device.type == "cuda",
            capturable=self.use_graph,
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if spec.amp_dtype == torch.float16 else None
        shape = (spec.batch, *spec.latent_shape)
        dtype = _base_dtype(unet)
        self.noisy = torch.zeros(shape, device=self.device, dtype=dtype)
        self.timesteps = torch.zeros(spec.batch, device=self.device, dtype=torch.long)
        self.target = torch.zeros(shape, device=self.device, dtype=torch.float32)
        self.hidden = torch.zeros((spec.batch, *spec.text_shape), device=self.device, dtype=dtype)
        self.graph: torch.cuda.CUDAGraph | None = None
        self._graph_loss: torch.Tensor | None = None
        self._eager_steps = 0
        #: Graph captures so far (one per built step, unless a forward is swapped in).
        self.captures = 0

    def _lora_layers(self) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """(lora_A weight, lora_B weight, rank) of every adapted layer, in module order."""
        pairs = []
        for module in self.unet.modules():
            lora_a = getattr(module, "lora_A", None)
            if isinstance(lora_a, torch.nn.ModuleDict) and TRAIN_ADAPTER in lora_a:
                pairs.append(
                    (lora_a[TRAIN_ADAPTER].weight, module.lora_B[TRAIN_ADAPTER].weight, module.r[TRAIN_ADAPTER])
                )
        return pairs

    # ------------------------------------------------------------------------------ per job
    @torch.no_grad()
    def begin(self, seed: int, hidden: torch.Tensor, init_state: dict[str, torch.Tensor] | None = None) -> None:
        """Start a job: the adapter's initial weights, a fresh optimizer state, the caption's states.

        Without ``init_state`` the adapter is initialised as peft's ``gaussian`` init does (A ~ N(0, 1/r),
        B = 0), from ``seed``; with it, ``init_state`` (peft names) is copied in.
        """
        from peft import set_peft_model_state_dict

        if init_state is None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
            for lora_a, lora_b, rank in self._lora_pairs:
                lora_a.normal_(0.0, 1.0 / rank, generator=generator)
                lora_b.zero_()
        else:
            for lora_a, lora_b, _ in self._lora_pairs:
                lora_a.zero_()
                lora_b.zero_()
            result = set_peft_model_state_dict(self.unet, init_state, adapter_name=TRAIN_ADAPTER)
            if result.unexpected_keys:
                log.warning("initial face LoRA: %d keys did not match the UNet", len(result.unexpected_keys))
        # In place: a captured optimizer step reads these very tensors.
        for state in self.optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value.zero_()
        if self.scaler is not None:
            self.scaler = torch.amp.GradScaler(self.device.type)
        if self.graph is None:
            self.optimizer.zero_grad(set_to_none=True)
        self.hidden.copy_(hidden.expand_as(self.hidden))

    def set_learning_rate(self, value: float) -> None:
        group = self.optimizer.param_groups[0]
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value

    def run(self, fill: Callable[[], None]) -> torch.Tensor:
        """One optimizer step on the inputs ``fill()`` writes; returns the loss (on the device).

        Eager for the first ``warmup_steps`` steps the step ever runs (on a side stream, as a capture
        needs), then captured once and replayed from then on, across jobs.
        """
        if self.use_graph and self.graph is None and self._eager_steps >= self.spec.warmup_steps:
            self._capture()
        if self.graph is not None:
            fill()
            self.graph.replay()
            assert self._graph_loss is not None
            return self._graph_loss
        side = torch.cuda.Stream(device=self.device) if self.use_graph else None
        if side is not None:
            side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            fill()
            loss = self._forward_backward()
            self.optimizer.zero_grad(set_to_none=True)
        if side is not None:
            torch.cuda.current_stream(self.device).wait_stream(side)
        self._eager_steps += 1
        return loss

    def use_forward(self, forward: UNetForward | None) -> None:
        """Run the step through ``forward`` from now on (warm-up steps and a capture follow)."""
        self.forward = forward
        self.graph, self._graph_loss = None, None
        self._eager_steps = 0
        self.optimizer.zero_grad(set_to_none=True)

    def close(self) -> None:
        """Remove the adapter and the graph: the UNet is frozen, in eval mode, as it was loaded."""
        self.graph, self._graph_loss = None, None
        self.optimizer.state.clear()
        self.unet.eval()
        if has_adapters(self.unet):
            self.unet.unload_lora()
        self.unet.requires_grad_(False)

    # ----------------------------------------------------------------------------- internals
    def _unet(self, sample: torch.Tensor, timestep: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        if self.forward is not None:
            return self.forward(sample, timestep, hidden)
        output: torch.Tensor = self.unet(sample, timestep, encoder_hidden_states=hidden, return_dict=False)[0]
        return output

    def _forward_backward(self) -> torch.Tensor:
        amp = self.spec.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None, cache_enabled=False):
            predicted = self._unet(self.noisy, self.timesteps, self.hidden)
        loss = F.mse_loss(predicted.float(), self.target, reduction="mean")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.spec.max_grad_norm, foreach=self.device.type == "cuda")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return loss

    def _capture(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with CAPTURE_LOCK:
                # The warm-up steps' blocks go back to the driver so the graph's own pool can take
                # the memory (otherwise both stay reserved).
                torch.cuda.empty_cache()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, capture_error_mode=CAPTURE_ERROR_MODE):
                    loss = self._forward_backward()
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            log.warning("CUDA graph capture of the training step failed; training eagerly", exc_info=True)
            self.use_graph = False
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.graph, self._graph_loss = graph, loss
        self.captures += 1
        log.info("captured the training step (batch %d) as a CUDA graph", self.spec.batch)


def _base_dtype(unet: torch.nn.Module) -> torch.dtype:
    """The UNet's own weight dtype (its frozen parameters; the adapter's are fp32)."""
    for param in unet.parameters():
        if not param.requires_grad:
            return param.dtype
    return torch.float32
