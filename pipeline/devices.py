"""Which device and dtype the GPU stages run on, and what to do when the device runs out of memory.

``settings.device`` / ``settings.dtype`` may be ``auto``: CUDA when available, with bf16 for training
(no loss scaling needed, same range as fp32) and fp16 for inference (SD 1.5's own release dtype);
on CPU everything is fp32, since half precision there is slow or unsupported.
"""

from __future__ import annotations

import gc
from typing import Literal

import torch

from pipeline.config import WorkerSettings
from pipeline.errors import WorkerSetupError
from pipeline.jobs import ErrorCode

Purpose = Literal["train", "infer"]

_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class DeviceUnavailable(WorkerSetupError, RuntimeError):
    """``FACECHAIN_DEVICE`` names a device this machine's torch cannot use."""


class DeviceOutOfMemory(RuntimeError):
    """The accelerator ran out of memory; memory was freed before this was raised."""

    error_code = ErrorCode.OUT_OF_MEMORY


def pick_device(settings: WorkerSettings) -> torch.device:
    """The device from ``settings.device``: ``auto`` picks the first CUDA device, else the CPU."""
    name = settings.device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"FACECHAIN_DEVICE={settings.device} but torch {torch.__version__} sees no CUDA device: "
                "install the CUDA build of torch and the NVIDIA driver, or set FACECHAIN_DEVICE=cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"FACECHAIN_DEVICE={settings.device} but torch sees {torch.cuda.device_count()} CUDA device(s), "
                f"numbered from 0"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"FACECHAIN_DEVICE={settings.device} but torch sees no Apple GPU (mps)")
    return device


def pick_dtype(settings: WorkerSettings, device: torch.device, purpose: Purpose) -> torch.dtype:
    """The dtype for ``purpose`` on ``device``; an explicit ``settings.dtype`` wins over ``auto``."""
    if settings.dtype != "auto":
        return _DTYPES[settings.dtype]
    if device.type != "cuda":
        return torch.float32
    if purpose == "train":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16


def configure_backends(device: torch.device, cudnn_benchmark: bool = False) -> None:
    """Enable TF32 matmuls on CUDA (the fp32 parts of training: LoRA params, loss, optimizer), and
    cuDNN's autotuner when asked (``FACECHAIN_CUDNN_BENCHMARK``): on an H200 it changed neither
    generation nor training and cost 1.7 s of every start, so it is off by default."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = cudnn_benchmark


#: UNets smaller than this run on one CPU thread unless ``FACECHAIN_CPU_THREADS`` says otherwise: their
#: operations are too small to share. Measured with the tiny test model (0.4 M parameters) on a 2-core CPU
#: that other processes also used: a training step took 3.6 s on torch's default 2 threads, 0.16 s on one
#: (the threads mostly waited for each other); SD 1.5's UNet has 860 M.
SMALL_MODEL_PARAMETERS = 50_000_000


def cpu_threads_for(settings: WorkerSettings, device: torch.device, parameters: int) -> int | None:
    """The intra-op threads torch should use for a model of ``parameters`` on ``device``; None: torch's own."""
    if device.type != "cpu":
        return None
    if settings.cpu_threads:
        return settings.cpu_threads
    return 1 if parameters < SMALL_MODEL_PARAMETERS else None


def use_cpu_threads(settings: WorkerSettings, device: torch.device, model: torch.nn.Module) -> int:
    """Apply :func:`cpu_threads_for` to this process (torch's thread pool is process-wide); the count used."""
    threads = cpu_threads_for(settings, device, sum(p.numel() for p in model.parameters()))
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (CUDA, or an older torch's generic RuntimeError)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Collect garbage and hand cached accelerator blocks back to the driver, never mid-capture.

    Called after an out-of-memory error and between jobs: a worker that trains and generates in one
    process would otherwise keep the peak of both reserved. Freeing blocks while another thread
    captures a CUDA graph would break that capture, hence the capture lock.
    """
    from pipeline.cuda_graphs import CAPTURE_LOCK

    gc.collect()
    if torch.cuda.is_available():
        with CAPTURE_LOCK:
            torch.cuda.empty_cache()
            torch.cuda.ipc_collect()


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (for honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
