"""The benchmark harness at smoke sizes on the session broker, so it cannot rot: every scenario
runs its contenders, writes its JSON, and the docs render from those results."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cli import SCENARIOS, main
from bench.report import render
from cardflow.local_kafka import LocalKafka


def test_every_scenario_runs_beside_its_baselines_and_the_docs_render(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    assert main(["all", "--smoke", "--broker", kafka.bootstrap, "--out", str(out)]) == 0
    results = {d["scenario"]: d for d in (json.loads(p.read_text()) for p in out.glob("*.json"))}
    assert set(results) == set(SCENARIOS)
    for name, data in results.items():
        assert data["missing"] is None, name
        assert data["level"] == "smoke" and data["machine"]["cores"] >= 1
        assert len(data["contenders"]) >= 2, f"{name} measured no baseline beside cardflow"
        for contender, runs in data["contenders"].items():
            assert runs["rounds"] and runs["median"], f"{name}: {contender} has no numbers"
            assert all(v >= 0 for v in runs["median"].values()), (name, contender, runs["median"])
        assert data["ratios"] or name == "recovery" or data["tables"], name
    # The cohort scenario's answers are checked cell for cell against bitmapist on a real Redis.
    cells = [t for t in results["cohort"]["targets"] if t["what"].startswith("cells equal")]
    assert len(cells) == 3 and all(t["met"] for t in cells), cells
    fold = results["fold"]["contenders"]
    assert {"cardflow", "ceiling", "faust"} <= set(fold), fold.keys()

    page = render(out, smoke=True)
    for name in SCENARIOS:
        assert f"## {name} — " in page
    assert f"{results['fold']['contenders']['cardflow']['median']['events_per_s']:,.0f}" in page
    assert "## fold — " not in render(out)  # smoke runs never reach docs/benchmarks.md by default
