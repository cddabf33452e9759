"""The benchmark stays runnable (a smoke run; nothing here is timed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
        ["| simple_line | 100 |", "| zmtp | 1000 |", "added p50"],
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
