"""The GPU side of the Telegram tests: a scripted stage runner behind the real arq worker.

It writes outputs to the blob store like the real stages and reports progress through the same
control. A photo of exactly ``NOT_A_FACE_SIZE`` is "no face found", so training rejects it and,
with too few photos left, fails with TOO_FEW_PHOTOS as the real preprocessing would.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field

from PIL import Image

from pipeline import jobs
from pipeline.control import StageCancelled, StageControl
from storage.blobs import BlobStore
from tests.scripted_stages import NothingInBackground, trained_outcome
from tests.telegram.media import NOT_A_FACE_SIZE


@dataclass
class ScriptedGpu(NothingInBackground):
    blobs: BlobStore
    #: Seconds per training step (three steps).
    step_s: float = 0.05
    #: While set and not released, training waits inside its first step (to cancel a running job).
    hold: threading.Event | None = None
    #: The same for generation: while set and not released, a generation waits before its portraits.
    hold_generate: threading.Event | None = None
    started: threading.Event = field(default_factory=threading.Event)
    calls: list[str] = field(default_factory=list)
    #: Every request the stages got, in order.
    requests: list[jobs.TrainRequest | jobs.GenerateRequest] = field(default_factory=list)
    #: "kind:run id" of every stage that stopped because it was told to (cancel, timeout).
    stopped: list[str] = field(default_factory=list)

    def release(self) -> None:
        """Let every held stage go on."""
        for hold in (self.hold, self.hold_generate):
            if hold is not None:
                hold.set()

    def _wait(self, hold: threading.Event | None, control: StageControl, what: str) -> None:
        try:
            while hold is not None and not hold.is_set():
                control.check()
                hold.wait(0.05)
            control.check()
        except StageCancelled:
            self.stopped.append(what)
            raise

    def train(self, request: jobs.TrainRequest, control: StageControl) -> jobs.TrainOutcome:
        self.calls.append(f"train:{request.run_id}")
        self.requests.append(request)
        rejections, used = [], []
        for key in request.photo_keys:
            with Image.open(io.BytesIO(self.blobs.get_bytes(key))) as image:
                size = image.size
            if size == NOT_A_FACE_SIZE:
                rejections.append(jobs.PhotoRejection(photo_key=key, reason=jobs.RejectReason.NO_FACE))
            else:
                used.append(key)
        control.report(jobs.Stage.PREPARING, 1.0, "")
        if len(used) < request.min_photos:
            error = jobs.ErrorCode.TOO_FEW_PHOTOS if used else jobs.ErrorCode.NO_FACE
            return jobs.TrainOutcome(run_id=request.run_id, error=error, rejections=rejections, used_photos=used)
        self.started.set()
        for step in range(3):
            self._wait(self.hold, control, f"train:{request.run_id}")
            time.sleep(self.step_s)
            control.report(jobs.Stage.TRAINING, (step + 1) / 3, "")
        return trained_outcome(request, self.blobs, ("template.jpg", self.blobs.get_bytes(used[0])), used, rejections)

    def generate(self, request: jobs.GenerateRequest, control: StageControl) -> jobs.GenerateOutcome:
        self.calls.append(f"generate:{request.run_id}")
        self.requests.append(request)
        control.report(jobs.Stage.GENERATING, 0.5, "")
        self._wait(self.hold_generate, control, f"generate:{request.run_id}")
        style_file = request.style.lora_key
        if style_file is not None and not self.blobs.exists(style_file):
            # As the real stages: an admin's style file that is gone is a missing model.
            return jobs.GenerateOutcome(run_id=request.run_id, error=jobs.ErrorCode.MODEL_MISSING)
        portraits = []
        for i in range(request.count):
            key = f"{jobs.run_prefix(request.run_id)}/portrait_{i}.jpg"
            image = Image.new("RGB", (64, 64), (40 * i % 256, 120, 200))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG")
            self.blobs.put_bytes(key, buffer.getvalue())
            portraits.append(jobs.Portrait(key=key, seed=1000 + i, score=0.9 - i / 20))
        return jobs.GenerateOutcome(run_id=request.run_id, style=request.style.name, portraits=portraits)
