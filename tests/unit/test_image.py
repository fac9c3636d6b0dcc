"""The container image, checked without a Docker engine: the Dockerfile follows hadolint's rules
that matter here, and the wheel it would install works from a fresh virtual environment."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_follows_the_rules() -> None:
    steps = instructions()
    stages = [rest for op, rest in steps if op == "FROM"]
    assert len(stages) >= 2, "multi-stage: wheels built apart from the final image"
    for image in stages:
        name = image.split()[0]
        assert ":" in name and not name.endswith(":latest"), f"DL3006/DL3007: pin {name}"
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    for op, rest in steps:
        if op == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest, "DL3015"
            assert "rm -rf /var/lib/apt/lists" in rest, "DL3009"
            packages = [
                p for p in rest.split("apt-get install", 1)[1].split("&&")[0].split() if not p.startswith("-")
            ]
            assert all("=" in p for p in packages), f"DL3008: pin {packages}"
        if op == "RUN" and re.search(r"\bpip install\b", rest):
            assert "--no-cache-dir" in rest, "DL3042"
        assert op != "ADD", "DL3020: COPY, not ADD"
        assert not (op == "RUN" and re.search(r"\bsudo\b", rest)), "DL3004"
    users = [rest for op, rest in final if op == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "DL3002: the last USER is not root"
    entry = [rest for op, rest in final if op == "ENTRYPOINT"]
    assert entry and entry[-1].startswith("["), "DL3025: exec form"
    assert "tini" in entry[-1] and entry[-1].rstrip("]").endswith('"cardflow"'), (
        "tini as PID 1, then cardflow"
    )
    assert not any("build-essential" in rest or "gcc" in rest for op, rest in final if op == "RUN"), (
        "no compilers in the final stage"
    )
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def test_the_wheel_runs_from_a_fresh_virtualenv(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "wheels"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "wheels").glob("cardflow-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "cardflow/api/static/insights.js",
        "cardflow/api/static/chart.umd.min.js",
        "cardflow/schemas/ProfileChange.avsc",
        "cardflow/topologies/warehouse.py",
        "cardflow/agents/warehouse.py",
        "cardflow/connectors/warehouse.py",
        "cardflow/agents/map_child.py",  # run as `python -m cardflow.agents.map_child`
        "cardflow/bitmapist/cohort.py",
        "cardflow/bitmapist/tmpl/table_data.mako",
    ):
        assert needed in names, needed
    assert not any(n.startswith("tests/") for n in names)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # The dependencies come from the test's own environment (the image installs them from wheels);
    # cardflow itself only from the wheel.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    done = subprocess.run(
        [str(env_dir / "bin" / "cardflow"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "worker" in done.stdout and "warehouse" in done.stdout
    where = subprocess.run(
        [str(python), "-c", "import cardflow; print(cardflow.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert str(env_dir) in where  # the wheel's cardflow, not the checkout's
