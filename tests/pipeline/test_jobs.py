"""The job contract: what crosses Redis must round-trip as JSON and refuse what is malformed."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipeline import jobs

STYLE = jobs.StyleSpec(name="Business suit", prompt="a person in a suit", lora=None)


def _train(**overrides: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "run_id": "t20261125abcdef",
        "user_id": 7,
        "model_id": 3,
        "photo_keys": ["users/7/photos/1/a.jpg", "users/7/photos/1/b.jpg"],
    }
    payload.update(overrides)
    return payload


def test_requests_round_trip_through_the_arq_serializer() -> None:
    request = jobs.GenerateRequest(
        run_id="g20261125abcdef", user_id=7, model_id=3, lora_key="runs/t1/lora.safetensors",
        trigger="<fcsks>, a handsome man", style=STYLE, count=4, seed=123,
    )  # fmt: skip
    wire = jobs.serialize({"a": [request.model_dump(mode="json")]})
    assert b"pickle" not in wire
    back = jobs.parse_request(jobs.deserialize(wire)["a"][0])
    assert back == request


@pytest.mark.parametrize(
    "overrides",
    [
        {"photo_keys": ["../../etc/passwd"]},
        {"photo_keys": ["/abs/path.jpg"]},
        {"photo_keys": ["users/7/../8/a.jpg"]},
        {"photo_keys": []},
        {"run_id": "x"},
        {"run_id": "has space in it"},
        {"v": 2},
        {"user_id": "seven"},
        {"unexpected": 1},
    ],
)
def test_malformed_train_requests_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        jobs.parse_request({"kind": "train", **_train(**overrides)})


def test_salvage_run_id_finds_a_usable_id_only() -> None:
    assert jobs.salvage_run_id({"run_id": "t20261125abcdef", "user_id": "bad"}) == "t20261125abcdef"
    assert jobs.salvage_run_id({"run_id": "../x"}) is None
    assert jobs.salvage_run_id(["not", "a", "dict"]) is None


def test_outcomes_are_discriminated_by_kind_and_carry_typed_errors() -> None:
    failed = jobs.TrainOutcome(
        run_id="t20261125abcdef",
        error=jobs.ErrorCode.TOO_FEW_PHOTOS,
        rejections=[jobs.PhotoRejection(photo_key="users/7/photos/1/a.jpg", reason=jobs.RejectReason.NO_FACE)],
    )
    back = jobs.parse_outcome(json.loads(failed.model_dump_json()))
    assert isinstance(back, jobs.TrainOutcome)
    assert not back.ok
    assert back.rejections[0].reason is jobs.RejectReason.NO_FACE
    done = jobs.parse_outcome_json(
        jobs.GenerateOutcome(
            run_id="g20261125abcdef", portraits=[jobs.Portrait(key="runs/g/0.jpg", seed=5)]
        ).model_dump_json()
    )
    assert isinstance(done, jobs.GenerateOutcome) and done.ok and done.portraits[0].seed == 5


def test_every_subject_has_a_trigger_phrase() -> None:
    assert set(jobs.TRIGGER_PHRASES) == set(jobs.Subject)


def test_a_retry_gets_a_fresh_arq_job_id() -> None:
    assert jobs.arq_job_id("t20261125abcdef", 1) != jobs.arq_job_id("t20261125abcdef", 2)
    assert jobs.outcome_key("t20261125abcdef").startswith(jobs.run_prefix("t20261125abcdef") + "/")


def test_a_styles_lora_is_a_model_reference_or_an_upload_never_one_for_the_other() -> None:
    reference = "modelscope:ly261666/civitai_xiapei_lora@v1.0.0/xiapei.safetensors"
    builtin = jobs.StyleSpec(name="hanfu", prompt="p", lora=reference)
    upload = jobs.StyleSpec(name="noir", prompt="p", lora_key="communities/1/styles/noir-ab.safetensors")
    assert (builtin.lora_key, upload.lora) == (None, None)
    with pytest.raises(ValidationError, match="not a model reference"):
        jobs.StyleSpec(name="x", prompt="p", lora="ly261666/civitai_xiapei_lora/x.safetensors", lora_key="a/b")
    with pytest.raises(ValidationError, match="not a valid blob key"):
        jobs.StyleSpec(name="x", prompt="p", lora_key="modelscope:YorickHe/fairy_lora/fairy.safetensors")
    with pytest.raises(ValidationError, match="one LoRA"):
        jobs.StyleSpec(name="x", prompt="p", lora="hf:o/n/f.safetensors", lora_key="a/b.safetensors")


def test_a_job_queued_by_the_previous_bot_keeps_its_uploaded_lora() -> None:
    # Before lora_key, an admin upload's blob key travelled in ``lora``: a job still queued at the upgrade.
    old = {"name": "noir", "prompt": "p", "lora": "communities/1/styles/noir-ab.safetensors"}
    spec = jobs.StyleSpec.model_validate(old)
    assert (spec.lora, spec.lora_key) == (None, "communities/1/styles/noir-ab.safetensors")
