"""Profile scripts isolated from the worker and from each other: a time budget per call, disabling
after failures in a row, owned fields, read-only views of required scripts' fields."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardflow.events import Event, derive_event_id
from cardflow.isolation import ReadOnlyFieldError, ScriptTimeout
from cardflow.profiles import ProfileScript, ProfileScriptError, ScriptSet, fold_events, profile_script
from cardflow.standard import DAY_MS, standard

T0 = 1_790_000_000_000
HORIZON = 7 * DAY_MS


def _event(name: str, i: int, **props: Any) -> Event:
    ts = T0 + i
    return Event(derive_event_id("u", name, ts, props, {}, {}), "u", name, ts, props, {}, {})


@profile_script("stuck", version="1", events=["loop", "sleep"])
def stuck(profile: dict[str, Any], event: Event) -> None:
    if event.event == "sleep":
        time.sleep(30)
    while True:  # even a script that swallows every Exception is stopped
        try:
            profile["spins"] = profile.get("spins", 0) + 1
        except Exception:  # noqa: BLE001, S110 - what a careless script does
            pass


@profile_script("counts", version="1")
def counts(profile: dict[str, Any], event: Event) -> None:
    profile["n"] = profile.get("n", 0) + 1


@pytest.fixture
def budgeted() -> Any:
    runner = ScriptSet((standard, stuck, counts), timeout_s=0.05)
    assert runner.start()
    yield runner
    assert runner.budget is not None
    runner.budget.stop()


def test_an_endless_loop_and_a_sleep_are_cut_at_the_budget_only_they_fail(budgeted: ScriptSet) -> None:
    events = [(_event("view", 0), 0), (_event("loop", 1), 1), (_event("view", 2), 2), (_event("sleep", 3), 3)]
    started = time.perf_counter()
    result = fold_events(None, events, budgeted, HORIZON)
    elapsed = time.perf_counter() - started
    assert [(offset, script, type(exc)) for _, offset, script, exc in result.failed] == [
        (1, "stuck", ScriptTimeout), (3, "stuck", ScriptTimeout)]
    assert "budget is 50 ms" in str(result.failed[0][3])
    # The failed events are left out entirely (standard's counts too), the others folded.
    profile = result.value["profile"]
    assert profile["events"] == {"view": 2} and profile["n"] == 2 and "spins" not in profile
    assert elapsed < 10  # 30 s of sleep and an endless loop, cut off (a bound, not a benchmark)


def test_a_script_failing_in_a_row_is_disabled_and_the_others_keep_folding() -> None:
    disabled: list[tuple[str, str]] = []

    @profile_script("broken", version="1", events=["broken.*"])
    def broken(profile: dict[str, Any], event: Event) -> None:
        raise ValueError("always")

    runner = ScriptSet((standard, broken), max_failures=3, on_disable=lambda *a: disabled.append(a))
    events = [(_event("broken.x", i), i) for i in range(5)] + [(_event("view", 5), 5)]
    result = fold_events(None, events, runner, HORIZON)
    assert [offset for _, offset, *_ in result.failed] == [0, 1, 2]
    assert disabled == [("broken", "ValueError: always")]
    assert result.value["profile"]["events"] == {"broken.x": 2, "view": 1}  # folded without it
    assert runner.take_skipped() == {"broken": 2} and runner.take_skipped() == {}


def test_a_success_resets_the_count_of_failures_in_a_row() -> None:
    @profile_script("flaky", version="1")
    def flaky(profile: dict[str, Any], event: Event) -> None:
        if event.properties.get("bad"):
            raise ValueError("bad input")

    runner = ScriptSet((flaky,), max_failures=2)
    events = [(_event("e", i, bad=i % 2 == 0), i) for i in range(10)]
    assert len(fold_events(None, events, runner, HORIZON).failed) == 5 and not runner.disabled


def test_required_fields_are_read_only_and_owned_fields_protected() -> None:
    @profile_script("views", version="1", requires=["standard"])
    def views(profile: dict[str, Any], event: Event) -> None:
        profile["view_share"] = profile["events"].get("view", 0) / sum(profile["events"].values())
        if event.properties.get("write") == "top":
            profile["events"] = {}
        elif event.properties.get("write") == "nested":
            profile["events"]["view"] = 10**6

    @profile_script("rogue", version="1")
    def rogue(profile: dict[str, Any], event: Event) -> None:
        if event.properties.get("write") == "rogue":
            profile["first_seen"] = 0  # standard's, not visible (nor writable) here

    runner = ScriptSet((views, rogue, standard))
    assert [s.name for s in runner.scripts] == ["standard", "views", "rogue"]  # requires orders
    events = [(_event("view", 0), 0), (_event("buy", 1, write="top"), 1),
              (_event("buy", 2, write="nested"), 2), (_event("buy", 3, write="rogue"), 3),
              (_event("buy", 4), 4)]
    result = fold_events(None, events, runner, HORIZON)
    failed = {offset: (script, exc) for _, offset, script, exc in result.failed}
    assert sorted(failed) == [1, 2, 3]
    assert failed[1][0] == "views" and isinstance(failed[1][1], ReadOnlyFieldError)
    assert "belongs to profile script 'standard'" in str(failed[1][1])
    assert failed[2][0] == "views" and isinstance(failed[2][1], TypeError)  # no item assignment
    assert failed[3][0] == "rogue" and "['first_seen']" in str(failed[3][1])
    profile = result.value["profile"]
    assert profile["events"] == {"view": 1, "buy": 1} and profile["first_seen"] == T0
    assert profile["view_share"] == 0.5


def test_a_declared_script_writes_only_its_fields() -> None:
    @profile_script("tidy", version="1", fields=["a"])
    def tidy(profile: dict[str, Any], event: Event) -> None:
        profile["a" if event.event == "a" else "b"] = 1

    result = fold_events(None, [(_event("a", 0), 0), (_event("b", 1), 1)], ScriptSet((tidy,)), HORIZON)
    assert [o for _, o, *_ in result.failed] == [1] and "outside its declared fields ['a']" in str(
        result.failed[0][3])
    assert result.value["profile"] == {"a": 1}


def test_fields_of_scripts_no_longer_loaded_are_kept() -> None:
    first = fold_events(None, [(_event("view", 0), 0)], ScriptSet((standard, counts)), HORIZON)
    from cardflow.profile_values import encode_value

    again = fold_events(encode_value(first.value), [(_event("view", 1), 1)], ScriptSet((standard,)), HORIZON)
    assert again.value["profile"]["n"] == 1 and again.value["profile"]["events"] == {"view": 2}


def test_load_time_errors_are_clear() -> None:
    def noop(profile: dict[str, Any], event: Event) -> None:
        return None

    with pytest.raises(ProfileScriptError, match=r"requires \['nope'\], which are not loaded"):
        ScriptSet((ProfileScript("a", "1", noop, requires=("nope",)),))
    with pytest.raises(ProfileScriptError, match="cycle: a → b → a"):
        ScriptSet((ProfileScript("a", "1", noop, requires=("b",)),
                   ProfileScript("b", "1", noop, requires=("a",))))
    with pytest.raises(ProfileScriptError, match="both declare field 'events'"):
        ScriptSet((standard, ProfileScript("mine", "1", noop, fields=("events",))))
    with pytest.raises(ProfileScriptError, match="requires must be a list"):
        profile_script("x", "1", requires="standard")(noop)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["view", "buy", "play"]), st.integers(0, 10 * DAY_MS)),
                min_size=1, max_size=30))
def test_isolation_does_not_change_what_well_behaved_scripts_fold(names: list[tuple[str, int]]) -> None:
    """The same scripts folded with parts (split and merged) and as plain functions agree."""

    @profile_script("ratio", version="1", requires=["standard"], fields=["buy_ratio"])
    def ratio(profile: dict[str, Any], event: Event) -> None:
        ev = profile["events"]
        profile["buy_ratio"] = ev.get("buy", 0) / sum(ev.values())

    events = [Event(derive_event_id("u", n, T0 + t, {"i": i}, {}, {}), "u", n, T0 + t, {"i": i}, {}, {})
              for i, (n, t) in enumerate(names)]
    isolated = fold_events(None, [(e, i) for i, e in enumerate(events)], ScriptSet((ratio, standard, counts)),
                           10**12).value["profile"]
    plain: dict[str, Any] = {}
    for event in events:
        for script in (standard, ratio, counts):
            script.fold(plain, event)
    assert isolated == plain
