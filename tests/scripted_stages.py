"""What the scripted GPU stages of the chat tests (Telegram, Discord, the queue) share: what they
leave behind when a training succeeds (files where the real stages put theirs, and the outcome
naming them), and the end of their life in a stopping worker."""

from __future__ import annotations

from pipeline import jobs
from storage.blobs import BlobStore


class NothingInBackground:
    """A scripted runner's ``close``: it runs nothing beside its jobs; ``closes`` counts the calls."""

    closes = 0

    def close(self, wait_s: float) -> list[str]:
        self.closes += 1
        return []


def trained_outcome(
    request: jobs.TrainRequest,
    blobs: BlobStore,
    template: tuple[str, bytes],
    used: list[str],
    rejections: list[jobs.PhotoRejection] | None = None,
) -> jobs.TrainOutcome:
    """A stand-in LoRA and the ``template`` (file name, bytes) under the run's prefix, and the outcome of
    a 3-step training on the ``used`` photos with FaceChain's trigger for the subject (a person if none)."""
    prefix = jobs.run_prefix(request.run_id)
    lora_key, template_key = f"{prefix}/face_lora.safetensors", f"{prefix}/{template[0]}"
    blobs.put_bytes(lora_key, b"lora")
    blobs.put_bytes(template_key, template[1])
    subject = request.subject or jobs.Subject.PERSON
    return jobs.TrainOutcome(
        run_id=request.run_id,
        lora_key=lora_key,
        template_key=template_key,
        subject=subject,
        trigger=f"{jobs.TRIGGER_TOKEN}, {jobs.TRIGGER_PHRASES[subject]}",
        used_photos=used,
        rejections=rejections or [],
        steps=3,
    )
