"""The benchmark stays runnable (a smoke run; nothing here is timed)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


#: (script, the modules it needs, what its quick run prints)
BENCHES: list[tuple[str, list[str], list[str]]] = [
    ("line_bench.py", ["sota_simple_line"], ["| raw-asyncio |", "| sota-asyncio |", "ratio to raw"]),
    ("zmtp_bench.py", ["sota_zmtp", "zmq"], ["pyzmq-frames", "sota-asyncio"]),
    ("xprotocol_bench.py", ["sota_xprotocol"], ["dubbo-invocation", "bolt-asyncio"]),
    (
        "proxy_bench.py",
        ["sota_simple_line", "sota_xprotocol", "sota_zmtp"],
        [
            "| simple_line | 100 |",
            "| zmtp | 1000 |",
            "added p50",
            "cores busy via proxy",
            "via relay req/s",
            "added by the relay p50",
            "(the relay, doing no work, adds",
            "- wake-ups: one costs ",
        ],
    ),
    (
        "security_bench.py",
        ["sota_simple_line", "sota_xprotocol", "sota_zmtp", "trustme", "nacl"],
        ["| bolt | proxy | 200 |", "| zmtp | proxy | 200 |", "secured / plaintext"],
    ),
    ("proxy_instructions.py", ["sota_simple_line"], ["| simple_line | 10 |", "Instructions per proxied request"]),
    (
        "workers_bench.py",
        ["sota_simple_line", "sota_xprotocol"],
        ["| simple_line | 2 |", "| bolt | 1 |", "vs 1 worker"],
    ),
    ("reload_bench.py", ["sota_simple_line"], ["| 100 |", "every 50 ms (cluster replaced)"]),
    (
        "overload_bench.py",
        ["sota_simple_line", "sota_xprotocol"],
        ["| asyncio | this tree |", "10,000 / 10,000", "100,000 / 100,000"],
    ),
]


@pytest.mark.parametrize(("script", "needs", "expected"), BENCHES, ids=[script for script, *_ in BENCHES])
def test_bench_quick_run_prints_its_tables(script: str, needs: list[str], expected: list[str]) -> None:
    for module in needs:  # the benches measure the plugins: without them there is nothing to run
        pytest.importorskip(module)
    if script == "proxy_instructions.py" and shutil.which("callgrind_control") is None:
        pytest.skip("needs valgrind (callgrind)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--output", "-"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout


# -- what a wake-up costs (bench/wakeup.py, in every report's machine section) ------


def _wakeup(cpus: set[int] | None = None) -> dict[str, Any]:
    """bench/wakeup.py's JSON line, run on ``cpus`` only when given."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "wakeup.py"), "--json", "--rounds", "300"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs")
def test_wakeup_measures_both_placements() -> None:
    figures = _wakeup()
    assert figures["across_us"] > 0
    assert figures["same_us"] > 0


def test_wakeup_on_one_cpu_says_there_is_no_across_figure() -> None:
    figures = _wakeup({min(os.sched_getaffinity(0))})
    assert figures["across_us"] is None
    assert figures["same_us"] > 0


# -- the source line: an installed build made from other sources is named -------------


def _bench_module(monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    """bench/<name>.py, imported as the scripts import it (bench/ on sys.path)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module(name)


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Any:
    return _bench_module(monkeypatch, "harness")


def test_differing_sources_names_changed_and_missing_files(harness: Any, tmp_path: Path) -> None:
    checkout, installed = tmp_path / "checkout", tmp_path / "installed"
    for tree in (checkout, installed):
        (tree / "sub").mkdir(parents=True)
        (tree / "same.py").write_text("x = 1\n")
        (tree / "sub" / "changed.py").write_text("y = 1\n")
    (installed / "sub" / "changed.py").write_text("y = 2\n")
    (checkout / "new.py").write_text("z = 1\n")
    (installed / "only_installed.py").write_text("")  # a file the checkout lacks is not its concern
    assert harness.differing_sources(installed, checkout) == ["new.py", "sub/changed.py"]
    (installed / "new.py").write_text("z = 1\n")
    (installed / "sub" / "changed.py").write_text("y = 1\n")
    assert harness.differing_sources(installed, checkout) == []


# -- the plots (bench/plots.py): drawn from a tiny fake table, nothing measured ----------


@pytest.fixture
def plots(monkeypatch: pytest.MonkeyPatch) -> Any:
    return _bench_module(monkeypatch, "plots")


def _fake_panels(plots: Any) -> list[Any]:
    bar, panel = plots.Bar, plots.Panel
    return [
        panel(
            "CPU",
            "µs/msg",
            [
                bar("asyncio", "raw", 4.0, 3.9, 4.1),
                bar("asyncio", "sota", 4.7, 4.6, 4.8, "1.18x"),
                bar("trio\n(vs raw)", "sota", 4.8, label="1.20x"),
            ],
        ),
        panel("throughput", "messages/s", [bar("asyncio", "raw", 250_000.0), bar("asyncio", "sota", 210_000.0)]),
        panel("nothing measured", "", []),
    ]


def test_plot_helper_writes_a_png_next_to_the_report(plots: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    lines = plots.figure_lines(str(tmp_path / "FAKE_RESULTS.md"), "fake bench", _fake_panels(plots), ["sota_dispatch"])
    assert lines == ["![fake bench](FAKE_RESULTS.png)", ""]
    png = tmp_path / "FAKE_RESULTS.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in tmp_path.iterdir()] == ["FAKE_RESULTS.png"]  # no temporary file left


def test_plot_is_skipped_without_matplotlib(plots: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.ticker", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    lines = plots.figure_lines(str(tmp_path / "FAKE_RESULTS.md"), "fake bench", _fake_panels(plots), ["sota_dispatch"])
    assert "plot skipped: matplotlib is not installed" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_no_plot_when_no_report_is_written(plots: Any) -> None:
    assert plots.figure_path("-") is None
    assert plots.figure_lines("-", "fake bench", [], ["sota_dispatch"]) == []
