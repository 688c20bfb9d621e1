"""The chat classifier on a fixed set of messages, word masking and per-room policy lookup."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tipstream.config import ModerationSettings, Settings
from tipstream.moderation import chatpolicy, classifier
from tipstream.rooms.queries import StreamRow

TOXIC = [
    "you are a fucking idiot",
    "shut up bitch",
    "go kill yourself you stupid piece of shit",
]
CLEAN = ["what a lovely show tonight", "hello from Berlin", "can you play that song again?"]


@pytest.mark.parametrize("text", TOXIC)
def test_toxic_messages_score_high(text: str) -> None:
    assert classifier.score_sync([text])[0] >= 0.8


@pytest.mark.parametrize("text", CLEAN)
def test_clean_messages_score_low(text: str) -> None:
    assert classifier.score_sync([text])[0] < 0.5


def test_mask_stars_only_the_offending_words() -> None:
    assert classifier.mask_sync("you are a fucking idiot", 0.8) == "you are a ******* *****"
    assert classifier.mask_sync("nice show, thanks!", 0.8) == "nice show, thanks!"


def _stream(performer_id: int) -> StreamRow:
    return StreamRow(
        id=1,
        performer_id=performer_id,
        performer_name="p",
        title="t",
        tags=[],
        adult=True,
        status="live",
        janus_room_id=None,
        janus_room_secret=None,
        janus_room_pin=None,
        scheduled_at=None,
        started_at=None,
        ended_at=None,
        end_reason=None,
        created_at=datetime.now(UTC),
    )


def test_policy_per_room_falls_back_to_the_default() -> None:
    settings = Settings(
        moderation=ModerationSettings(chat_policy="mask", chat_policy_by_room={"7": "block"})
    )
    assert chatpolicy.policy_for(settings, _stream(7)) == "block"
    assert chatpolicy.policy_for(settings, _stream(8)) == "mask"


def test_linear_scorer_gives_the_libraries_own_probabilities() -> None:
    from profanity_check import predict_prob

    texts = [*TOXIC, *CLEAN, "", "the and of", "Ünïcode wörds fuck", "a"]
    ours = classifier.score_sync(texts)
    theirs = [float(p) for p in predict_prob(texts)]
    assert ours == pytest.approx(theirs, abs=1e-9)
