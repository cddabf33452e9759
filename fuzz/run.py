"""Run the fuzz targets (``fuzz/targets.py``) under atheris, coverage-guided.

    python fuzz/run.py --seconds 5              # every target, 5 s each (CI)
    python fuzz/run.py --seconds 600 zmtp bolt  # a longer run of some

Each target runs in a child process (libFuzzer owns its process) with its
seeds and the corpus it grew in earlier runs (``fuzz/corpus/<target>``,
not committed); a crash leaves its input in ``fuzz/crashes/`` and fails
the run: copy it to ``fuzz/regressions/<target>/`` with the fix, and
``tests/test_fuzz_regressions.py`` replays it forever after. The table
printed at the end gives each target's executions, coverage (libFuzzer's
``cov``: edges reached) and outcome. Without atheris (it ships wheels
for CPython up to 3.11), each target gets the same time of random byte
mutations of its seeds instead, which finds less and says so.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

_INSTRUMENTED = ["sota_dispatch", "sota_simple_line", "sota_xprotocol", "sota_zmtp", "targets", "yaml"]
_STATS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+)")


def _child(name: str, seconds: float, corpus: Path, crashes: Path) -> None:
    """The libFuzzer process of one target (does not return)."""
    # Nothing of ours may be imported before this (main() does not): a module
    # imported earlier would run without coverage feedback. Only our packages
    # (and yaml, whose parser the config target drives) are instrumented: the
    # rest (anyio, attrs, importlib.metadata...) is imported first, plain, so
    # libFuzzer's coverage counts our edges and each child starts in about a
    # second instead of ten (instrumenting every dependency's bytecode was
    # most of CI's fuzzing stage).
    import anyio  # noqa: F401
    import atheris
    import attrs  # noqa: F401

    with atheris.instrument_imports(include=_INSTRUMENTED):
        import yaml  # noqa: F401

        import sota_dispatch  # noqa: F401
        import sota_simple_line  # noqa: F401
        import sota_xprotocol  # noqa: F401
        import sota_zmtp  # noqa: F401
        from targets import TARGETS

    target = TARGETS[name]
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)

    def one(data: bytes) -> None:
        with contextlib.suppress(*target.allowed):
            target.run(data)

    crashes.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={max(1, round(seconds))}",
        f"-artifact_prefix={crashes}/{name}-",
        "-max_len=8192",
        "-rss_limit_mb=2048",
        "-timeout=10",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, one)
    atheris.Fuzz()


def _mutations(name: str, seconds: float, crashes: Path) -> tuple[int, str]:
    """The fallback without atheris: random byte mutations of the seeds."""
    from targets import TARGETS, check

    target = TARGETS[name]
    seeds = target.seeds() or [b""]
    rng = random.Random(0)
    runs = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            kind = rng.randrange(3)
            if kind == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif kind == 1:
                data[rng.randrange(len(data) + 1) : 0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif data:
                start = rng.randrange(len(data))
                del data[start : start + rng.randint(1, 16)]
        runs += 1
        error = check(target, bytes(data))
        if error is not None:
            crashes.mkdir(parents=True, exist_ok=True)
            path = crashes / f"{name}-crash-{runs}"
            path.write_bytes(bytes(data))
            return runs, f"CRASH {type(error).__name__}: {error} ({path})"
    return runs, "ok"


def _mutation_row(name: str, seconds: float, crashes: Path) -> tuple[str, str, str, str]:
    runs, outcome = _mutations(name, seconds, crashes)
    return name, f"{runs:,}", "-", outcome


def _libfuzzer_row(name: str, args: argparse.Namespace) -> tuple[str, str, str, str]:
    """One target's libFuzzer child, run to its end: its row of the table."""
    with tempfile.TemporaryFile("w+") as log:
        command = [sys.executable, __file__, "--child", name, "--seconds", str(args.seconds)]
        command += ["--corpus", str(args.corpus), "--crashes", str(args.crashes)]
        done = subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=args.seconds + 120,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        log.seek(0)
        text = log.read()
    stats = _STATS.findall(text)
    runs, coverage = (int(stats[-1][0]), int(stats[-1][1])) if stats else (0, 0)
    if done.returncode == 0:
        return name, f"{runs:,}", str(coverage), "ok"
    crash = re.search(r"Test unit written to (\S+)", text)
    tail = "\n".join(text.strip().splitlines()[-30:])
    print(f"--- {name} ---\n{tail}", file=sys.stderr)
    return name, f"{runs:,}", str(coverage), f"CRASH (exit {done.returncode}) {crash.group(1) if crash else ''}"


def main() -> int:
    if "--child" in sys.argv:  # before anything of ours is imported (see _child)
        child = argparse.ArgumentParser()
        for flag in ("--child", "--seconds", "--corpus", "--crashes"):
            child.add_argument(flag)
        args = child.parse_args()
        _child(args.child, float(args.seconds), Path(args.corpus) / args.child, Path(args.crashes))
        return 0
    from targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"targets (default: all): {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per target (default 5)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="targets run at once (default: cores)")
    parser.add_argument("--corpus", type=Path, default=HERE / "corpus", help="where corpora grow")
    parser.add_argument("--crashes", type=Path, default=HERE / "crashes", help="where crashing inputs go")
    args = parser.parse_args()
    chosen = args.targets or list(TARGETS)
    unknown = [name for name in chosen if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r} (targets: {', '.join(TARGETS)})")
    try:
        import atheris  # noqa: F401

        engine = "atheris (libFuzzer)"
    except ImportError:
        engine = "random mutations (atheris is not installed)"
    print(f"fuzzing with {engine}, {args.seconds:g} s per target")
    if engine.startswith("random"):
        rows = [_mutation_row(name, args.seconds, args.crashes) for name in chosen]
    else:
        # Each target is its own libFuzzer process: run as many at once as
        # there are cores (CI's two), in the order given, the table in that order.
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            rows = list(pool.map(lambda name: _libfuzzer_row(name, args), chosen))
    failed = any(outcome != "ok" for *_, outcome in rows)
    width = max(len(name) for name, *_ in rows)
    print(f"{'target':<{width}}  {'executions':>11}  {'coverage':>8}  outcome")
    for name, executions, covered, outcome in rows:
        print(f"{name:<{width}}  {executions:>11}  {covered:>8}  {outcome}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
