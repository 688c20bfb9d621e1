"""Requests, responses and room events of the Live rooms API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=140)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[\w-]+$")]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
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


class IceServer(msgspec.Struct):
    """One entry of RTCConfiguration.iceServers, as the browser takes it."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None
