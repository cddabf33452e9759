"""Proxy memory under hostile loads (floods and deep pipelines), this tree against another.

Two loads, each against a proxy process (``python -m sota_dispatch.serve``)
forwarding to a local echo service, on asyncio, uvloop and trio:

* ``flood``: 32 clients each send 14 MiB of a 15 MiB bolt frame and hold
  it; then a new client sends a bolt heartbeat. Reported: the proxy's peak
  RSS growth (VmHWM after minus before) and whether the heartbeat was
  answered.
* ``pipeline-N``: N connections each pipeline 500 simple_line requests
  through the README's ``--upstream`` proxy. Reported: answers that were
  the backend's (the rest are error replies) and the peak RSS growth.

``--base DIR`` runs the same loads against another checkout (say, ``git
worktree add /tmp/base <commit>``), by putting its library folders first on
the child processes' ``PYTHONPATH``: the table then shows both, from the
same run. Memory, not speed: one run each is enough.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import HOST, machine_lines, publish, report_head, source_line, version

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
BACKENDS = {
    "asyncio": ["--backend", "asyncio", "--no-uvloop"],
    "uvloop": ["--backend", "asyncio"],
    "trio": ["--backend", "trio"],
}
LIBRARIES = ("", "protocols/simple_line", "protocols/zmtp", "protocols/xprotocol")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def env_for(tree: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([*(str(tree / lib) for lib in LIBRARIES), env.get("PYTHONPATH", "")])
        env["SOTA_BENCH_TREE"] = str(tree)
    return env


def serve(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # ``-m`` puts the working directory first on sys.path: run from the
    # tree measured, or the checkout this script sits in would win.
    tree = env.get("SOTA_BENCH_TREE", str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "sota_dispatch.serve", *args, "--log-level", "error"],
        env=env,
        cwd=tree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = int(args[args.index("--listen") + 1].rpartition(":")[2])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"serve {args} did not listen")


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(key)


def bolt_frame(content: int) -> bytes:
    from sota_xprotocol import bolt

    return bolt.BoltFrame(
        bolt.FrameType.REQUEST,
        bolt.CmdCode.RPC_REQUEST,
        1,
        codec=11,
        timeout=30_000,
        class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest",
        content=b"x" * content,
    ).encode()


def heartbeat(port: int) -> bool:
    from sota_xprotocol import bolt

    try:
        with socket.create_connection((HOST, port), timeout=10) as sock:
            sock.sendall(bolt.heartbeat_request(7).encode())
            decoder = bolt.BoltDecoder()
            while True:
                data = sock.recv(65536)
                if not data:
                    return False
                frames = decoder.feed(data)
                if frames:
                    return frames[0].status == 0
    except OSError:
        return False


def flood(backend: list[str], env: dict[str, str], clients: int = 32) -> tuple[int, bool]:
    up, front = free_port(), free_port()
    upstream = serve(["--protocol", "bolt", "--listen", f"{HOST}:{up}", *backend], env)
    proxy = serve(["--protocol", "bolt", "--listen", f"{HOST}:{front}", "--upstream", f"{HOST}:{up}", *backend], env)
    socks: list[socket.socket] = []
    try:
        heartbeat(front)
        before = vm(proxy.pid, "VmHWM")
        frame = memoryview(bolt_frame(15 * MiB))[: 14 * MiB]

        def client() -> None:
            try:
                sock = socket.create_connection((HOST, front), timeout=30)
                socks.append(sock)
                for start in range(0, len(frame), 256 * 1024):
                    sock.sendall(frame[start : start + 256 * 1024])
            except OSError:
                pass  # closed by the proxy

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        time.sleep(0.5)  # what the kernel still held reaches the proxy
        answered = heartbeat(front)
        return vm(proxy.pid, "VmHWM") - before, answered
    finally:
        for sock in socks:
            sock.close()
        for process in (proxy, upstream):
            process.kill()
            process.wait()


async def pipelined(port: int, clients: int, requests: int) -> int:
    async def one(k: int) -> int:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"".join(b"c=%d&n=%d\r\n" % (k, i) for i in range(requests)))
        real = 0
        for _ in range(requests):
            line = await asyncio.wait_for(reader.readline(), 60)
            real += line.startswith(b"receive:")
        writer.close()
        return real

    return sum(await asyncio.gather(*(one(k) for k in range(clients))))


def pipeline(backend: list[str], env: dict[str, str], clients: int) -> tuple[int, int]:
    up, front = free_port(), free_port()
    upstream = serve(["--protocol", "simple_line", "--listen", f"{HOST}:{up}", *backend], env)
    proxy = serve(
        ["--protocol", "simple_line", "--listen", f"{HOST}:{front}", "--upstream", f"{HOST}:{up}", *backend], env
    )
    try:
        asyncio.run(pipelined(front, 2, 10))
        before = vm(proxy.pid, "VmHWM")
        real = asyncio.run(pipelined(front, clients, 500))
        return real, vm(proxy.pid, "VmHWM") - before
    finally:
        for process in (proxy, upstream):
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--output", default=str(ROOT / "bench" / "OVERLOAD_RESULTS.md"), help="report file (- : none)")
    parser.add_argument("--quick", action="store_true", help="smoke test: asyncio only, 4 flooding clients")
    args = parser.parse_args()
    started = time.monotonic()
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.base is not None:
        base = args.base.resolve()
        head = subprocess.run(["git", "-C", str(base), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        trees.insert(0, (f"base {head.stdout.strip() or base}", base))
    rows = []
    backends = {"asyncio": BACKENDS["asyncio"]} if args.quick else BACKENDS
    for backend, flags in backends.items():
        for name, tree in trees:
            env = env_for(tree)
            grown, answered = flood(flags, env, 4 if args.quick else 32)
            line20, rss20 = pipeline(flags, env, 20)
            line200, rss200 = pipeline(flags, env, 200)
            rows.append(
                f"| {backend} | {name} | {grown / MiB:.0f} | {'yes' if answered else 'NO'} "
                f"| {line20:,} / 10,000 | {rss20 / MiB:.0f} | {line200:,} / 100,000 | {rss200 / MiB:.0f} |"
            )
            print(rows[-1], file=sys.stderr)
    command = "python bench/overload_bench.py" + (f" --base {args.base}" if args.base else "")
    lines = report_head("Proxy memory under hostile loads", "bench/overload_bench.py", command)
    lines += machine_lines(f"anyio {version('anyio')}, uvloop {version('uvloop')}, trio {version('trio')}")
    lines.append(source_line(["sota_dispatch", "protocols"]))
    lines += [
        "",
        "## Results",
        "",
        "Peak RSS growth of the proxy process (VmHWM, MiB). flood: 32 clients each holding 14 MiB of a "
        "15 MiB bolt frame, then a new client's heartbeat. pipeline: N connections x 500 pipelined "
        "simple_line requests through `--upstream`; answers from the backend (the rest were error replies).",
        "",
        "| backend | code | flood RSS + | heartbeat answered | 20 x 500 answers | RSS + | 200 x 500 answers | RSS + |",
        "|---|---|---:|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    publish("\n".join(lines), args.output, started)


if __name__ == "__main__":
    main()
