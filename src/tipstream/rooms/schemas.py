"""Requests, responses and room events of the Live rooms API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tipstream.accounts.schemas import PRINTABLE

# PRINTABLE: not blank, no control characters (a NUL cannot be stored: it was a 500).
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=140, pattern=PRINTABLE)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[\w-]+$")]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=PRINTABLE)]
StreamStatus = Literal["scheduled", "live", "ended"]


class CreateStreamRequest(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
    tags: Annotated[list[Tag], msgspec.Meta(max_length=10)] = []
    adult: bool = True
    scheduled_at: datetime | None = None


class EndStreamRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason | None = None


class Stream(msgspec.Struct):
    id: int
    performer_id: int
    performer_name: str
    title: str
    tags: list[str]
    adult: bool
    status: StreamStatus
    scheduled_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    created_at: datetime
    viewers: int = 0
    # How well the performer's media reaches the SFU (rooms/linkhealth.py): "degraded" while
    # Janus reported slow links within [rooms] slowlink_window_seconds; their count and the
    # packets Janus said were lost in them.
    health: Literal["good", "degraded"] = "good"
    slow_links: int = 0
    lost_packets: int = 0


class IceServer(msgspec.Struct):
    """One entry of RTCConfiguration.iceServers, as the browser takes it."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


# --------------------------------------------------------------------------- room WebSocket
# Client → server messages, tagged by "type". The room WebSocket rejects anything else.

Sdp = Annotated[str, msgspec.Meta(min_length=10, max_length=60_000)]
ChatText = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
PositiveId = Annotated[int, msgspec.Meta(gt=0, le=2**63 - 1)]


class IceCandidate(msgspec.Struct, forbid_unknown_fields=False):
    candidate: Annotated[str, msgspec.Meta(max_length=1000)]
    sdpMid: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, msgspec.Meta(ge=0, le=64)] | None = None


class PublishMessage(msgspec.Struct, tag="publish", tag_field="type", forbid_unknown_fields=True):
    """The performer's SDP offer; answered with {"type": "answer"}."""

    sdp: Sdp


class SubscribeMessage(
    msgspec.Struct, tag="subscribe", tag_field="type", forbid_unknown_fields=True
):
    """A viewer asks for the stream; answered with {"type": "offer"} from Janus."""

    substream: Annotated[int, msgspec.Meta(ge=0, le=2)] | None = None


class AnswerMessage(msgspec.Struct, tag="answer", tag_field="type", forbid_unknown_fields=True):
    """The viewer's SDP answer to the offer; media starts ({"type": "subscribed"})."""

    sdp: Sdp


class IceMessage(msgspec.Struct, tag="ice", tag_field="type", forbid_unknown_fields=True):
    """A trickled ICE candidate; null when gathering is complete."""

    candidate: IceCandidate | None = None


class QualityMessage(msgspec.Struct, tag="quality", tag_field="type", forbid_unknown_fields=True):
    """A viewer's quality choice when the performer sends simulcast (0 lowest .. 2 highest)."""

    substream: Annotated[int, msgspec.Meta(ge=0, le=2)]


class ChatMessage(msgspec.Struct, tag="chat", tag_field="type", forbid_unknown_fields=True):
    text: ChatText


ModAction = Literal["delete", "mute", "unmute", "ban", "slow"]


class ModerateMessage(msgspec.Struct, tag="moderate", tag_field="type", forbid_unknown_fields=True):
    """The performer or a moderator acts on the room."""

    action: ModAction
    message_id: PositiveId | None = None
    user_id: PositiveId | None = None
    seconds: Annotated[int, msgspec.Meta(ge=0, le=7 * 24 * 3600)] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class PingMessage(msgspec.Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    pass


ClientMessage = (
    PublishMessage
    | SubscribeMessage
    | AnswerMessage
    | IceMessage
    | QualityMessage
    | ChatMessage
    | ModerateMessage
    | PingMessage
)


class GoalRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A tip goal for the live stream: tips count toward it from now on."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=PRINTABLE)]
    tokens: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]


class Goal(msgspec.Struct):
    title: str
    target: int
    progress: int
    reached: bool


# --------------------------------------------------------------------------- tip menus

TIP_MENU_MAX_ITEMS = 20
# Shown to others and sent as the tip's message: no control characters, something not blank.
MenuLabel = Annotated[
    str, msgspec.Meta(min_length=1, max_length=60, pattern=r"^(?=.*\S)[^\x00-\x1f\x7f]+$")
]
MenuTokens = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class TipMenuItem(msgspec.Struct, forbid_unknown_fields=True):
    label: MenuLabel
    tokens: MenuTokens


class TipMenuRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The whole menu, in the order viewers see it; an empty list clears it."""

    items: Annotated[list[TipMenuItem], msgspec.Meta(max_length=TIP_MENU_MAX_ITEMS)]


class TipMenu(msgspec.Struct):
    performer_id: int
    items: list[TipMenuItem]
