from __future__ import annotations

import random

import orjson
import pytest

from cardflow.dedup import dedup_id
from cardflow.events import Event, derive_event_id
from cardflow.profile_values import decode_value, encode_value
from cardflow.profiles import ProfileScriptError, fold_events, load_scripts, profile_script
from cardflow.standard import DAY_MS, active_days, standard, standard_script, user_property

HORIZON = 7 * DAY_MS
T0 = 1_790_000_000_000


def _event(uid: str, name: str, ts: int, set_: dict | None = None, once: dict | None = None,
           props: dict | None = None) -> Event:
    props, set_, once = props or {}, set_ or {}, once or {}
    return Event(derive_event_id(uid, name, ts, props, set_, once), uid, name, ts, props, set_, once)


def _random_events(n: int, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + rng.randrange(0, 500) * DAY_MS + rng.randrange(DAY_MS)
        name = rng.choice(["view", "buy", "signup", "share"])
        set_ = {"plan": rng.choice(["free", "team", "pro"]), "n": i} if rng.random() < 0.3 else None
        once = {"first": rng.choice("abc")} if rng.random() < 0.2 else None
        # Same-ts ties on purpose: the tiebreak must be deterministic.
        if rng.random() < 0.05 and out:
            ts = out[-1].ts
        out.append(_event("u", name, ts, set_, once, {"i": i}))
    return out


def _fold_all(events: list[Event], batch: int) -> bytes:
    stored = None
    offset = 0
    for start in range(0, len(events), batch):
        chunk = []
        for event in events[start:start + batch]:
            chunk.append((event, offset))
            offset += 1
        stored = encode_value(fold_events(stored, chunk, (standard,), HORIZON).value)
    return orjson.dumps(decode_value(stored), option=orjson.OPT_SORT_KEYS)


def test_order_independence_byte_identical() -> None:
    events = _random_events(3000)
    baseline = _fold_all(events, 100)
    for seed in (2, 3):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        assert _fold_all(shuffled, 37 * seed) == baseline


def test_standard_fields() -> None:
    events = [
        _event("u", "view", T0, {"plan": "free"}, {"src": "ad"}),
        _event("u", "buy", T0 + DAY_MS, {"plan": "team"}, {"src": "mail"}),
        _event("u", "view", T0 + 3 * DAY_MS),
        _event("u", "view", T0 + 3 * DAY_MS + 5),
    ]
    result = fold_events(None, [(e, i) for i, e in enumerate(events)], (standard,), HORIZON)
    profile = result.value["profile"]
    assert profile["first_seen"] == T0 and profile["last_seen"] == T0 + 3 * DAY_MS + 5
    assert profile["events"] == {"view": 3, "buy": 1}
    day0 = T0 // DAY_MS
    assert active_days(profile, "view") == [day0, day0 + 3]
    assert active_days(profile) == [day0, day0 + 1, day0 + 3]
    assert user_property(profile, "plan") == "team" and user_property(profile, "src") == "ad"
    assert result.folded == 4 and result.duplicates == 0 and result.max_ts == T0 + 3 * DAY_MS + 5
    assert result.changed == ["days", "events", "first_seen", "last_seen", "properties", "properties_once"]


def test_active_days_window_is_bounded() -> None:
    script = standard_script(window_days=10)
    events = [_event("u", "view", T0 + d * DAY_MS) for d in (0, 5, 12, 30)]
    profile = fold_events(None, [(e, i) for i, e in enumerate(events)], (script,), HORIZON).value["profile"]
    day0 = T0 // DAY_MS
    assert active_days(profile, "view") == [day0 + 30]
    assert len(profile["days"]["view"][1]) <= 3  # 10 bits at most


def test_redelivered_offsets_and_resent_events_dedup() -> None:
    a, b = _event("u", "view", T0), _event("u", "buy", T0 + 1)
    first = fold_events(None, [(a, 10), (b, 11)], (standard,), HORIZON)
    stored = encode_value(first.value)
    again = fold_events(stored, [(a, 10), (b, 11)], (standard,), HORIZON)
    assert (again.folded, again.duplicates) == (0, 2)
    resent = fold_events(stored, [(a, 12), (b, 13)], (standard,), HORIZON)
    assert (resent.folded, resent.duplicates) == (0, 2)
    assert resent.value["profile"] == first.value["profile"] and resent.value["meta"]["offset"] == 13


def test_resent_events_dedup_among_many_stored_ids() -> None:
    """Ids are found by binary search in their day's sorted bucket, batch after batch."""
    events = [_event("u", "view", T0 + (i % 5) * DAY_MS + i) for i in range(3000)]
    rng = random.Random(4)
    stored, offset = None, 0
    for start in range(0, 3000, 250):
        batch = [(e, offset + i) for i, e in enumerate(events[start:start + 250])]
        offset += 250
        stored = encode_value(fold_events(stored, batch, (standard,), HORIZON).value)
    buckets = decode_value(stored)["meta"]["ids"]
    for chunk in buckets.values():
        ids = [chunk[i:i + 12] for i in range(0, len(chunk), 12)]
        assert ids == sorted(set(ids))
    assert sum(len(c) for c in buckets.values()) == 3000 * 12
    resent = rng.sample(events, 400) + [_event("u", "view", T0 + 9_999_999)]
    result = fold_events(stored, [(e, offset + i) for i, e in enumerate(resent)], (standard,), HORIZON)
    assert (result.folded, result.duplicates) == (1, 400)


def test_ids_are_pruned_beyond_the_horizon() -> None:
    old, new = _event("u", "view", T0), _event("u", "view", T0 + 30 * DAY_MS)
    result = fold_events(None, [(old, 0), (new, 1)], (standard,), HORIZON)
    assert result.value["meta"]["ids"] == {str(new.ts // DAY_MS): dedup_id(new.event_id)}


def test_a_failing_script_leaves_the_event_out_entirely() -> None:
    @profile_script("fragile", version="1")
    def fragile(profile, event):
        profile["touched"] = profile.get("touched", 0) + 1
        if event.properties.get("boom"):
            raise ValueError("boom")

    ok1, ok2 = _event("u", "v", T0), _event("u", "v", T0 + 2)
    bad = _event("u", "v", T0 + 1, props={"boom": 1})
    result = fold_events(None, [(ok1, 0), (bad, 1), (ok2, 2)], (standard, fragile), HORIZON)
    assert result.folded == 2 and [(e.event_id, o, name) for e, o, name, _ in result.failed] == [
        (bad.event_id, 1, "fragile")]
    assert result.value["profile"]["touched"] == 2 and result.value["profile"]["events"] == {"v": 2}
    assert result.value["meta"]["offset"] == 2


def test_load_scripts() -> None:
    assert load_scripts(["cardflow.standard"]) == (standard,)
    assert load_scripts(["cardflow.standard:standard"]) == (standard,)
    with pytest.raises(ProfileScriptError, match="cannot be imported"):
        load_scripts(["no.such.module"])
    with pytest.raises(ProfileScriptError, match="holds no ProfileScript"):
        load_scripts(["cardflow.events"])


def test_ids_are_capped_by_dropping_whole_oldest_days() -> None:
    days = [T0 + d * DAY_MS for d in range(3)]
    events = [_event("u", "view", days[i % 3] + i) for i in range(3 * 8_000)]  # 24,000 ids > MAX_IDS
    stored, offset = None, 0
    for start in range(0, len(events), 5_000):
        batch = [(e, offset + i) for i, e in enumerate(events[start:start + 5_000])]
        offset += len(batch)
        stored = encode_value(fold_events(stored, batch, (standard,), HORIZON).value)
    ids = decode_value(stored)["meta"]["ids"]
    assert list(ids) == [str(d // DAY_MS) for d in days[1:]]  # the oldest day went whole, order kept
    assert [len(c) // 12 for c in ids.values()] == [8_000, 8_000]


def test_changed_lists_added_altered_and_dropped_fields() -> None:
    @profile_script("toggle", version="1")
    def toggle(profile, event):
        if event.event == "on":
            profile["flag"] = True
        else:
            profile.pop("flag", None)

    first = fold_events(None, [(_event("u", "on", T0), 0)], (standard, toggle), HORIZON)
    assert "flag" in first.changed
    stored = encode_value(first.value)
    off = fold_events(stored, [(_event("u", "off", T0 + 1), 1)], (standard, toggle), HORIZON)
    assert off.changed == ["days", "events", "flag", "last_seen"]  # "flag" dropped, the rest altered


def test_sent_event_ids_dedup_whole_whatever_their_form() -> None:
    # Sent ids often share long prefixes ("evt_0000000001", Segment's "ajs-next-…") or are short;
    # each must count once, and only a re-send of the same id is a duplicate.
    ids = [f"evt_{n:010d}" for n in range(1, 40)] + ["a", "b", "ab", "ajs-next-1f", "ajs-next-2e", "x" * 200]
    events = [Event(event_id, "u", "view", T0 + n * 1000) for n, event_id in enumerate(ids)]
    first = fold_events(None, [(e, n) for n, e in enumerate(events)], (standard,), HORIZON)
    assert (first.folded, first.duplicates) == (len(ids), 0)
    stored = encode_value(first.value)
    resent = [(events[3], 100), (events[-1], 101), (events[40], 102), (Event("c", "u", "view", T0), 103)]
    again = fold_events(stored, resent, (standard,), HORIZON)
    assert (again.folded, again.duplicates) == (1, 3)
    assert decode_value(encode_value(again.value))["profile"]["events"] == {"view": len(ids) + 1}


def test_a_script_sees_only_the_events_it_asks_for() -> None:
    @profile_script("video", version="1", events=["video.*", "play"],
                    where=lambda e: e.properties.get("length", 0) > 10)
    def video(profile, event):
        profile["videos"] = profile.get("videos", 0) + 1
        profile.setdefault("seen", []).append(event.event)

    names = ["video.start", "play", "video.start", "pause", "videox", "video.end", "play"]
    events = [(Event(f"e{i}", "u", name, 1_700_000_000_000 + i, {"length": 5 if i == 2 else 30}, {}, {}, "t"),
               i) for i, name in enumerate(names)]
    result = fold_events(None, events, (standard, video), 7 * 86_400_000)
    profile = result.value["profile"]
    assert profile["seen"] == ["video.start", "play", "video.end", "play"]  # not pause, videox, nor short
    assert profile["events"]["pause"] == 1 and result.folded == len(names)  # other scripts see everything
    with pytest.raises(ProfileScriptError, match="events must be a list"):
        profile_script("bad", version="1", events="video.*")(lambda p, e: None)
