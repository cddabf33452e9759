"""The benchmark stays runnable (a smoke run; nothing here is timed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_line_bench_quick_run_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "line_bench.py"), "--quick", "--output", "-"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| raw-asyncio |" in result.stdout
    assert "| sota-asyncio |" in result.stdout
    assert "ratio to raw" in result.stdout


def test_zmtp_bench_quick_run_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "zmtp_bench.py"), "--quick", "--output", "-"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pyzmq-frames" in result.stdout
    assert "sota-asyncio" in result.stdout


def test_xprotocol_bench_quick_run_prints_the_tables() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "xprotocol_bench.py"), "--quick", "--output", "-"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "dubbo-invocation" in result.stdout
    assert "bolt-asyncio" in result.stdout
