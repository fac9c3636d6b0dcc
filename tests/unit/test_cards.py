from __future__ import annotations

import math
from collections import Counter

import pytest
from pyroaring import BitMap

from cardflow.cards import Card, CardError, decode_partial, encode_partial, load_cards, merge
from cardflow.widgets import (
    Bar,
    Cohort,
    Funnel,
    Group,
    Line,
    Map,
    Number,
    Table,
    Text,
    Timeline,
    Users,
    WidgetError,
    widget_schema,
)


class Buyers(Card):
    title = "Buyers"
    params = {"event": "purchase"}

    def map(self, profiles):
        return sum(1 for p in profiles if p.get("events", {}).get(self.p["event"]))

    def render(self, total):
        return [Number(total or 0, label="users who bought")]


PROFILES = [{"events": {"purchase": 2}}, {"events": {"view": 1}}, {"events": {"purchase": 1}}]


def test_first_card_maps_reduces_and_renders() -> None:
    card = Buyers()
    assert card.id == "buyers" and card.version == "1"
    partials = [card.map(PROFILES[:2]), card.map(PROFILES[2:])]
    assert card.widgets(card.total(partials)) == [
        {"type": "number", "value": 2, "label": "users who bought", "delta": None, "unit": ""}]
    assert Buyers(event="view").map(PROFILES) == 1
    with pytest.raises(CardError, match="unknown parameter"):
        Buyers(evnt="x")


def test_plain_partials_merge() -> None:
    a = {"n": 1, "c": Counter(x=1), "s": {1}, "b": BitMap([1, 2]), "l": [1, 2], "d": {"k": 1}}
    b = {"n": 2, "c": Counter(x=2, y=1), "s": {2}, "b": BitMap([3]), "l": [1, 1, 5], "d": {"k": 2, "z": 1}}
    assert merge(a, b) == {"n": 3, "c": Counter(x=3, y=1), "s": {1, 2}, "b": BitMap([1, 2, 3]),
                           "l": [2, 3, 5], "d": {"k": 3, "z": 1}}
    with pytest.raises(CardError, match="cannot merge str with int"):
        merge("a", 1)


def test_partials_round_trip_through_bytes() -> None:
    value = {"c": Counter({("2026-11-01", "FI"): 3}), "b": BitMap([5, 900_000]), "s": {"a", "b"},
             "l": [1, 2.5, None], 7: "int key"}
    assert decode_partial(encode_partial(value)) == value
    with pytest.raises(CardError, match="cannot hold object"):
        encode_partial(object())


def test_widgets_validate_and_serialise() -> None:
    table = Table(["country", "users"], [["FI", 3], ["SE", 1]])
    assert table.to_csv() == "country,users\r\nFI,3\r\nSE,1\r\n"
    group = Group([Text("hi"), Group([Bar([("a", 1)]), Funnel([("view", 10), ("buy", 2)])], "horizontal")])
    assert group.to_json()["children"][1]["children"][1]["steps"] == [["view", 10], ["buy", 2]]
    assert Line({"dau": [("2026-11-01", 3)]}).to_json()["series"] == {"dau": [["2026-11-01", 3]]}
    assert Cohort([("2026-11-01", 10, [1.0, 0.5, None])]).to_json()["rows"][0]["cells"] == [1.0, 0.5, None]
    assert Map({"FI": 3}).to_json()["values"] == {"FI": 3}
    assert Timeline([(1, "x")]).to_json()["events"] == [[1, "x"]]
    assert Users([{"uid": "u"}]).to_json()["users"] == [{"uid": "u"}]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Number(math.nan), "Number.value must be finite"),
        (lambda: Number("3"), "Number.value must be a number"),
        (lambda: Bar([("a", 1, 2)]), r"Bar.data\[0\] must be a \(label, value\) pair"),
        (lambda: Line({}), "Line.series must be a non-empty"),
        (lambda: Table(["a"], [[1, 2]]), r"Table.rows\[0\] has 2 cells for 1 columns"),
        (lambda: Map({"Finland": 1}), "is not an ISO 3166-1 alpha-2 code"),
        (lambda: Cohort([("p", 3, [1.5])]), r"must be a share in \[0, 1\]"),
        (lambda: Group([1]), "is not a widget"),
        (lambda: Group([], "diagonal"), "must be 'horizontal' or 'vertical'"),
        (lambda: Users([{"name": "x"}]), "must be a dict with a 'uid'"),
    ],
)
def test_bad_widget_data_is_a_clear_error(build, message: str) -> None:
    with pytest.raises(WidgetError, match=message):
        build()


def test_schema_names_every_widget_type() -> None:
    types = {branch["properties"]["type"]["const"] for branch in widget_schema()["oneOf"]}
    assert types == {"text", "number", "bar", "line", "table", "map", "timeline", "users", "cohort",
                     "funnel", "group"}


def test_load_cards_checks_required_scripts() -> None:
    [card] = load_cards(["tests.unit.test_cards:Buyers"], ["standard"], {"buyers": {"event": "view"}})
    assert card.p["event"] == "view"
    with pytest.raises(CardError, match=r"needs profile script\(s\) \['standard'\]"):
        load_cards(["tests.unit.test_cards:Buyers"], [])
    with pytest.raises(CardError, match="cannot be imported"):
        load_cards(["no.such.cards"], ["standard"])


def test_load_cards_from_a_directory(tmp_path) -> None:
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "mine.py").write_text(
        "from cardflow.cards import Card\n"
        "class Visitors(Card):\n"
        "    def map(self, profiles):\n"
        "        return sum(1 for p in profiles)\n")
    [card] = load_cards([str(tmp_path / "cards")], ["standard"])
    assert card.id == "visitors" and card.map([{}, {}]) == 2
    (tmp_path / "cards" / "zbroken.py").write_text("import no_such_module\n")
    with pytest.raises(CardError, match=r"zbroken.py failed to load \(ModuleNotFoundError"):
        load_cards([str(tmp_path / "cards")], ["standard"])
    with pytest.raises(CardError, match="does not exist"):
        load_cards([str(tmp_path / "nowhere/")], ["standard"])


def test_serialised_widgets_match_the_published_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = widget_schema()
    widgets = [Text("x"), Number(1, delta=0.1), Bar([("a", 1)]), Line({"s": [(1, 2)]}),
               Table(["a"], [[1]]), Map({"FI": 1}), Timeline([(1, "e")]), Users([{"uid": "u"}]),
               Cohort([("p", 1, [1.0, None])]), Funnel([("a", 1)]), Group([Text("y")], "horizontal")]
    for widget in widgets:
        jsonschema.validate(widget.to_json(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "map", "label": "", "values": {"Finland": 1}}, schema)


def test_card_params_naming_no_loaded_card_is_an_error() -> None:
    with pytest.raises(CardError, match="'retension', which is not a loaded card"):
        load_cards(["cardflow.builtin_cards"], ["standard"], {"retension": {"period": "weeks"}})


def test_one_card_class_runs_under_several_ids_with_their_own_params() -> None:
    cards = {c.id: c for c in load_cards(
        ["cardflow.builtin_cards"], ["standard"],
        {"retention": {"period": "days"}, "retention-weekly": {"card": "retention", "period": "weeks"}})}
    weekly, daily = cards["retention-weekly"], cards["retention"]
    assert type(weekly) is type(daily) and weekly.p["period"] == "weeks" and daily.p["period"] == "days"
    assert weekly.title == "Retention (retention-weekly)" and type(daily).id == "retention"
    assert weekly.config != daily.config  # their partials never merge
    with pytest.raises(CardError, match="card 'nope' is not loaded"):
        load_cards(["cardflow.builtin_cards"], ["standard"], {"x": {"card": "nope"}})


def test_a_cards_config_digest_follows_its_class_version_and_params() -> None:
    from cardflow.builtin_cards import Retention, TopEvents

    assert Retention().config == Retention().config
    assert Retention(period="weeks").config != Retention().config
    assert TopEvents(limit=5).config != TopEvents().config
    assert len(Retention().config) == 16


def test_cards_using_cards_are_checked_at_load(tmp_path, monkeypatch) -> None:
    import sys

    from cardflow.cards import load_cards, placement

    def card(name: str, uses: tuple[str, ...] | None, maps: bool = True) -> str:
        return (f"class {name}(Card):\n" + (f"    uses = {uses!r}\n" if uses else "")
                + ("    def map(self, p): return 0\n" if maps else "")
                + f"    def render(self, t{', c' if uses else ''}): return []\n")

    (tmp_path / "used_cards.py").write_text("from cardflow.cards import Card\n" + "".join((
        card("A", ("b",)), card("B", ("c",)), card("C", ("a",)), card("D", ("nope",), maps=False),
        card("E", None, maps=False))))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("used_cards", None)
    with pytest.raises(CardError, match="cycle: a → b → c → a"):
        load_cards(["used_cards:A", "used_cards:B", "used_cards:C"], ["standard"])
    with pytest.raises(CardError, match=r"uses \['nope'\], which are not loaded"):
        load_cards(["used_cards:D"], ["standard"])
    with pytest.raises(CardError, match="neither map"):
        load_cards(["used_cards:E"], ["standard"])
    from cardflow.builtin_cards import ActiveUsers, TopEvents

    assert len(set(placement([ActiveUsers(), TopEvents()]).values())) == 2  # unrelated: placed apart
