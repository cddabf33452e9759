"""The benchmark stays runnable (a smoke run; nothing here is timed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("line_bench.py", ["| raw-asyncio |", "| sota-asyncio |", "ratio to raw"]),
        ("zmtp_bench.py", ["pyzmq-frames", "sota-asyncio"]),
        ("xprotocol_bench.py", ["dubbo-invocation", "bolt-asyncio"]),
        ("proxy_bench.py", ["| simple_line | 100 |", "| zmtp | 1000 |", "added p50"]),
        ("overload_bench.py", ["| asyncio | this tree |", "10,000 / 10,000", "100,000 / 100,000"]),
    ],
)
def test_bench_quick_run_prints_its_tables(script: str, expected: list[str]) -> None:
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
