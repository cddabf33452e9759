"""Every fuzz target, on its seeds and on every input that ever crashed it.

The seeds are real traffic (captured vectors, our encoders' frames, the
example configs); ``fuzz/regressions/<target>/`` holds inputs a fuzzing run
found to crash a target, kept after the fix so that it stays fixed. A target
may raise only its allowed errors (a codec: ProtocolError; the config
loader: ConfigError). The coverage-guided runs themselves are
``python fuzz/run.py`` (a short one in .ci/run; see docs/security.rst).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))

from targets import TARGETS, check, regressions


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_target_takes_its_seeds_and_every_saved_crash(name: str) -> None:
    target = TARGETS[name]
    inputs = [("seed", seed) for seed in target.seeds()] + [
        (path.name, path.read_bytes()) for path in regressions(name)
    ]
    assert inputs, f"{name} has no seeds"
    for label, data in inputs:
        error = check(target, data)
        assert error is None, f"{name} {label}: {type(error).__name__}: {error}"


def test_a_target_reports_what_escapes() -> None:
    # check() itself must be able to fail: an error outside the allowed ones is returned.
    target = TARGETS["simple_line"]
    broken = type(target)(target.name, lambda data: [][1], target.allowed, target.seeds)
    assert isinstance(check(broken, b"x"), IndexError)
