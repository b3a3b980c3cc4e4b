"""The real GPU stages behind the worker's jobs, end to end (a pipeline modelled on FaceChain's).

Training: photos from the blob store → preprocessing (detect, keep one dominant face, align, crop)
→ face LoRA training on the resident pipeline → LoRA and template face back to the blob store.
Generation: style + face LoRA on the resident pipeline → candidates → face filter and ranking by
similarity to the template face → NSFW check → the best portraits to the blob store.

Models are loaded once (in the worker's on_startup); each method is one blocking job.
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import jobs
from pipeline.background import BackgroundWork
from pipeline.config import WorkerSettings
from pipeline.control import StageCancelled, StageControl
from pipeline.devices import DeviceOutOfMemory, free_memory, pick_device, pick_dtype, use_cpu_threads
from pipeline.faces import FaceAnalyzer
from pipeline.generate import Candidate, GenerationCancelled, PortraitGenerator
from pipeline.lora_files import InvalidLoraFile
from pipeline.models import (
    ModelsMissingError,
    StyleLoraRefused,
    UploadedStyleLoraMissing,
    clone_pipeline,
    load_base_pipeline,
    model_side,
    resolve_style_lora,
)
from pipeline.nsfw import NsfwChecker
from pipeline.portraits import PortraitPicker
from pipeline.preprocess import caption, preprocess_photos
from pipeline.stages import FaceChainStages, load_analyzer, load_stages
from pipeline.train import LoraTrainer, TrainArgs, TrainingCancelled
from storage.blobs import BlobStore

log = logging.getLogger("facechain.runner")

PORTRAIT_JPEG_QUALITY = 92


class PipelineRunner:
    """Implements :class:`pipeline.worker.StageRunner` with the real stages."""

    def __init__(self, settings: WorkerSettings, blobs: BlobStore) -> None:
        self.settings = settings
        self.blobs = blobs
        #: Seconds each part of the start took (bench/gpu_bench.py's cold section reports them).
        self.startup_seconds: dict[str, float] = {}
        #: The warm-up and the compiles, beside the jobs (:meth:`close` stops them).
        self.background = BackgroundWork()
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            self.startup_seconds[name] = round(now - clock, 2)
            clock = now

        log.info("recipe %s; knobs set apart from it: %s", settings.recipe, settings.recipe_overrides() or "none")
        # First: a device that is not there is the one problem to report, not the stages it breaks.
        self.device = pick_device(settings)
        self.analyzer: FaceAnalyzer = load_analyzer(settings)
        self.stages: FaceChainStages = load_stages(settings)
        self.nsfw: NsfwChecker | None = NsfwChecker() if settings.nsfw_check else None
        self.picker = PortraitPicker(self.analyzer, self.nsfw, threads=settings.post_thread_count)
        lap("face_and_nsfw_models")
        # Training and generation may run at once in one process (one arq worker per queue), so
        # each has its own pipeline: training adds an adapter to its UNet while it runs.
        self.generator: PortraitGenerator | None = None
        self.train_pipe = None
        self.trainer: LoraTrainer | None = None
        if "generate" in settings.queues:
            self.generator = PortraitGenerator.load(settings, fuse=settings.fuse_loras, background=self.background)
            lap("generation_pipeline")
        if "train" in settings.queues:
            train_dtype = pick_dtype(settings, self.device, "train")
            if self.generator is not None and self.device.type == "cuda":
                self.train_pipe = clone_pipeline(self.generator.pipe, train_dtype)
            else:
                self.train_pipe = load_base_pipeline(settings, self.device, train_dtype)
            # The adapter, optimizer and captured step stay on the training UNet between jobs.
            self.trainer = LoraTrainer(self.train_pipe, compile_mode=settings.train_compile, background=self.background)
            lap("training_pipeline")
        resident = self.generator.pipe if self.generator is not None else self.train_pipe
        if resident is not None:
            side = model_side(settings.resolution, resident)
            if side < settings.resolution:
                log.info(
                    "training and generating at %d px, the base model's own size (FACECHAIN_RESOLUTION is %d)",
                    side, settings.resolution,
                )  # fmt: skip
            threads = use_cpu_threads(settings, self.device, resident.unet)
            if self.device.type == "cpu":
                log.info("running on the CPU with %d torch thread(s) (FACECHAIN_CPU_THREADS)", threads)
        log.info("worker ready: %s", self.startup_seconds)
        #: Set once the warm-ups below are done (their compiles may still run: ``compiled_ready``).
        self.warmed_up = threading.Event()
        if self.device.type != "cuda" or not self.background.start("warm-up", self._warm_up):
            self.warmed_up.set()

    def _warm_up(self) -> None:
        """Capture the CUDA graphs now rather than in the first users' jobs, then compile.

        In the background: the worker takes jobs meanwhile, and a job waits only for its own
        stage's capture (seconds). Compiled versions are made (or read from Inductor's cache) after
        both captures, one at a time, and taken up between jobs: on an H200 the training step's
        eager warm-up took 52–60 s instead of 1.3 s while the UNet compiled beside it.
        """
        clock = time.perf_counter()
        training_warmed = False
        try:
            if self.generator is not None:
                self.generator.warm_up(background_compile=True, defer_compile=True)
                self.startup_seconds["generation_warm_up"] = round(time.perf_counter() - clock, 2)
                clock = time.perf_counter()
            if self.trainer is not None and not self.background.stopping.is_set():
                after = self.generator.compiled_ready if self.generator is not None else None
                self.trainer.warm_up(TrainArgs.from_settings(self.settings), background_compile=True, after=after)
                training_warmed = True
                self.startup_seconds["training_warm_up"] = round(time.perf_counter() - clock, 2)
            log.info("warmed up: %s", self.startup_seconds)
        except Exception:
            # The first jobs capture instead (and report their own errors).
            log.warning("warming the worker up failed", exc_info=True)
        finally:
            self.warmed_up.set()
            if self.generator is not None:
                self.generator.start_background_compile()
            if self.trainer is not None and not training_warmed:
                self.trainer.compiled_ready.set()  # no compile will come

    def close(self, wait_s: float) -> list[str]:
        """Stop the warm-up and the compiles (waiting up to ``wait_s``) and the picking threads.

        The names of the background threads still running (:mod:`pipeline.background`).
        """
        left = self.background.stop(wait_s)
        self.picker.close()
        return left

    # ---------------------------------------------------------------------------------- train
    def train(self, request: jobs.TrainRequest, control: StageControl) -> jobs.TrainOutcome:
        started = time.perf_counter()
        if self.trainer is None:
            raise RuntimeError("this worker does not serve the train queue")
        prefix = jobs.run_prefix(request.run_id)

        def photo_progress(done: int, total: int) -> None:
            control.check()
            control.report(jobs.Stage.PREPARING, done / max(total, 1), f"{done} of {total} photos checked")

        photos = [(key, self.blobs.get_bytes(key)) for key in request.photo_keys]
        prepared = preprocess_photos(
            photos, self.analyzer, self.settings, subject=request.subject, stages=self.stages, progress=photo_progress
        )
        rejections = [
            jobs.PhotoRejection(photo_key=r.key, reason=r.reason, detail=r.detail) for r in prepared.rejections
        ]
        used = [k.key for k in prepared.kept]
        control.report(jobs.Stage.PREPARING, 1.0, f"{len(used)} of {len(photos)} photos usable")
        ran = prepared.stages_run
        if len(prepared.kept) < request.min_photos:
            return jobs.TrainOutcome(
                run_id=request.run_id,
                error=jobs.ErrorCode.NO_FACE if not prepared.kept else jobs.ErrorCode.TOO_FEW_PHOTOS,
                message=f"{len(prepared.kept)} usable photo(s), {request.min_photos} needed",
                rejections=rejections,
                used_photos=used,
                stages_run=ran,
            )
        subject = request.subject or prepared.subject
        if subject is None:
            return jobs.TrainOutcome(
                run_id=request.run_id, needs_subject=True, rejections=rejections, used_photos=used, stages_run=ran
            )

        text = caption(subject)
        template_key = f"{prefix}/template.png"
        if prepared.template is not None:
            self.blobs.put_bytes(template_key, _png(prepared.template))
        args = TrainArgs.from_settings(
            self.settings,
            max_train_steps=request.max_train_steps or self.settings.max_train_steps,
            seed=request.seed,
        )

        def step_progress(step: int, total: int, loss: float) -> None:
            control.report(jobs.Stage.TRAINING, step / max(total, 1), f"step {step}/{total}")

        with tempfile.TemporaryDirectory(prefix="facechain-train-") as tmp:
            out = Path(tmp) / "face_lora.safetensors"
            try:
                result = self.trainer.train(
                    [k.image for k in prepared.kept], text, args, out,
                    on_progress=step_progress, should_stop=control.should_stop,
                )  # fmt: skip
            except TrainingCancelled:
                raise StageCancelled() from None
            except DeviceOutOfMemory:
                return jobs.TrainOutcome(
                    run_id=request.run_id, error=jobs.ErrorCode.OUT_OF_MEMORY, rejections=rejections, stages_run=ran
                )
            finally:
                # Training's blocks back to the driver: generation in this process can use them.
                free_memory()
            control.report(jobs.Stage.SAVING, 1.0, "")
            lora_key = f"{prefix}/face_lora.safetensors"
            self.blobs.put_file(lora_key, out)
        return jobs.TrainOutcome(
            run_id=request.run_id,
            lora_key=lora_key,
            template_key=template_key if prepared.template is not None else None,
            subject=subject,
            trigger=text,
            used_photos=used,
            rejections=rejections,
            steps=result.steps,
            seconds=round(time.perf_counter() - started, 2),
            stages_run=[*ran, "lora_training"],
        )

    # ------------------------------------------------------------------------------- generate
    def generate(self, request: jobs.GenerateRequest, control: StageControl) -> jobs.GenerateOutcome:
        started = time.perf_counter()
        if self.generator is None:
            raise RuntimeError("this worker does not serve the generate queue")
        face_lora = self.blobs.path(request.lora_key)
        try:
            style_lora = self._style_lora(request.style)
        except (ModelsMissingError, StyleLoraRefused) as exc:
            # Said before any GPU work; the bot does not charge a run that delivered nothing.
            log.error("%s", exc)
            code = jobs.ErrorCode.BAD_PAYLOAD if isinstance(exc, StyleLoraRefused) else jobs.ErrorCode.MODEL_MISSING
            return jobs.GenerateOutcome(run_id=request.run_id, error=code, style=request.style.name, message=str(exc))

        def step_progress(done: int, total: int) -> None:
            control.report(jobs.Stage.GENERATING, done / max(total, 1), "")

        # The user's template face is embedded on the CPU while the GPU denoises.
        template = self.picker.submit(self._template_embedding, request.template_key)

        # One job at a time on the GPU: the generator holds its own lock.
        try:
            candidates = self.generator.generate(
                face_lora, request.style, style_lora, request.trigger, request.count, request.candidates,
                seed=request.seed, on_progress=step_progress, should_stop=control.should_stop,
            )  # fmt: skip
        except GenerationCancelled:
            raise StageCancelled() from None
        except DeviceOutOfMemory:
            return jobs.GenerateOutcome(run_id=request.run_id, error=jobs.ErrorCode.OUT_OF_MEMORY)
        except InvalidLoraFile as exc:
            face = exc.path is not None and exc.path.resolve() == Path(face_lora).resolve()
            log.error("run %s: %s LoRA refused: %s", request.run_id, "face" if face else "style", exc)
            code = jobs.ErrorCode.FACE_MODEL_DAMAGED if face else jobs.ErrorCode.STYLE_DAMAGED
            return jobs.GenerateOutcome(run_id=request.run_id, error=code, style=request.style.name, message=str(exc))

        ran = ["generation"]
        fuser = self.stages.face_fusion
        if fuser is not None and request.template_key and self.blobs.exists(request.template_key):
            # FaceChain blends the user's best face into each candidate before ranking them.
            face = self._template_image(request.template_key)
            candidates = [
                Candidate(Image.fromarray(fuser(np.asarray(c.image.convert("RGB")), face)), c.seed) for c in candidates
            ]
            ran.append("face_fusion")
        nsfw_threshold = None if request.allow_nsfw else self.settings.nsfw_threshold
        template_embedding = template.result()
        if template_embedding is not None:
            # Reported only when it runs: the candidates are sorted by recognition similarity.
            control.report(jobs.Stage.RANKING, 0.0, "")
        elif self.settings.rank_faces:
            log.warning("run %s: portraits not ranked by likeness (no template face to compare with)", request.run_id)
        picked = self.picker.pick(
            [(c.image, c.seed) for c in candidates], request.count, rank=self.settings.rank_faces,
            template=template_embedding, nsfw_threshold=nsfw_threshold,
        )  # fmt: skip
        if self.settings.rank_faces:
            ran.append("ranking" if template_embedding is not None else "face_filter")
        if self.nsfw is not None and nsfw_threshold is not None:
            ran.append("nsfw_check")
        portraits: list[jobs.Portrait] = []
        prefix = jobs.run_prefix(request.run_id)
        for chosen in picked.portraits:
            key = f"{prefix}/portrait_{len(portraits)}.jpg"
            self.blobs.put_bytes(key, _jpeg(chosen.image))
            score = None if chosen.score is None else round(chosen.score, 4)
            portraits.append(jobs.Portrait(key=key, seed=chosen.seed, score=score))
        blocked, dropped = picked.blocked, picked.dropped
        seconds = round(time.perf_counter() - started, 2)
        if not portraits:
            return jobs.GenerateOutcome(
                run_id=request.run_id, error=jobs.ErrorCode.NO_USABLE_PORTRAIT, style=request.style.name,
                blocked=blocked, dropped=dropped, seconds=seconds, stages_run=ran,
            )  # fmt: skip
        return jobs.GenerateOutcome(
            run_id=request.run_id, style=request.style.name, portraits=portraits, blocked=blocked,
            dropped=dropped, seconds=seconds, stages_run=ran,
        )  # fmt: skip

    def _style_lora(self, style: jobs.StyleSpec) -> Path | None:
        """The style's LoRA file: an admin's upload from the blob store, or a style file's model reference."""
        if style.lora_key is not None:
            if not self.blobs.exists(style.lora_key):
                raise UploadedStyleLoraMissing(style.name, style.lora_key)
            return self.blobs.path(style.lora_key)
        if style.lora is not None:
            return resolve_style_lora(self.settings, style.name, style.lora)
        return None

    def _template_image(self, key: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.blobs.get_bytes(key))).convert("RGB"))

    def _template_embedding(self, key: str | None) -> np.ndarray | None:
        if not self.settings.rank_faces or key is None or not self.blobs.exists(key):
            return None
        return self.picker.embed_template(self._template_image(key))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=PORTRAIT_JPEG_QUALITY)
    return buffer.getvalue()
