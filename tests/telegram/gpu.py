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
from pipeline.worker import StageControl
from storage.blobs import BlobStore
from tests.telegram.media import NOT_A_FACE_SIZE


@dataclass
class ScriptedGpu:
    blobs: BlobStore
    #: Seconds per training step (three steps).
    step_s: float = 0.05
    #: While set and not released, training waits inside its first step (to cancel a running job).
    hold: threading.Event | None = None
    started: threading.Event = field(default_factory=threading.Event)
    calls: list[str] = field(default_factory=list)

    def train(self, request: jobs.TrainRequest, control: StageControl) -> jobs.TrainOutcome:
        self.calls.append(f"train:{request.run_id}")
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
            while self.hold is not None and not self.hold.is_set():
                control.check()
                self.hold.wait(0.05)
            control.check()
            time.sleep(self.step_s)
            control.report(jobs.Stage.TRAINING, (step + 1) / 3, "")
        prefix = jobs.run_prefix(request.run_id)
        self.blobs.put_bytes(f"{prefix}/face_lora.safetensors", b"lora")
        self.blobs.put_bytes(f"{prefix}/template.jpg", self.blobs.get_bytes(used[0]))
        subject = request.subject or jobs.Subject.PERSON
        return jobs.TrainOutcome(
            run_id=request.run_id,
            lora_key=f"{prefix}/face_lora.safetensors",
            template_key=f"{prefix}/template.jpg",
            subject=subject,
            trigger=f"{jobs.TRIGGER_TOKEN}, {jobs.TRIGGER_PHRASES[subject]}",
            used_photos=used,
            rejections=rejections,
            steps=3,
        )

    def generate(self, request: jobs.GenerateRequest, control: StageControl) -> jobs.GenerateOutcome:
        self.calls.append(f"generate:{request.run_id}")
        control.report(jobs.Stage.GENERATING, 0.5, "")
        portraits = []
        for i in range(request.count):
            key = f"{jobs.run_prefix(request.run_id)}/portrait_{i}.jpg"
            image = Image.new("RGB", (64, 64), (40 * i % 256, 120, 200))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG")
            self.blobs.put_bytes(key, buffer.getvalue())
            portraits.append(jobs.Portrait(key=key, seed=1000 + i, score=0.9 - i / 20))
        return jobs.GenerateOutcome(run_id=request.run_id, style=request.style.name, portraits=portraits)
