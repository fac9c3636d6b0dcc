"""The profiles agent: folds each event into its user's profile.

Runs with ``concurrency=1`` because it updates a table: with more, Faust can
commit an offset past a message still being folded.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import faust

log = logging.getLogger(__name__)


def register_profiles_agent(
    app: faust.App,
    events: faust.TopicT,
    profiles: faust.Table,
    changes: faust.TopicT,
) -> faust.types.AgentT:
    """Register the agent on ``app``: events → profiles table → profile-changes."""

    @app.agent(events, name="profiles", concurrency=1)
    async def fold(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            uid = _uid(event.key, event.value)
            if uid is None:
                continue
            profile: dict[str, Any] = dict(profiles[uid] or {"events": 0})
            profile["events"] += 1
            # Write back: in-place mutation of a table value is not changelogged.
            profiles[uid] = profile
            await changes.send(key=uid.encode(), value=json.dumps(
                {"uid": uid, "events": profile["events"]}).encode())

    return fold


def _uid(key: bytes | None, value: bytes | None) -> str | None:
    if key:
        return key.decode("utf-8", "replace")
    try:
        uid = json.loads(value or b"").get("uid")
    except (ValueError, AttributeError):
        return None
    return str(uid) if uid is not None else None
