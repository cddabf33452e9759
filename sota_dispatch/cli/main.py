"""``sota-dispatch``, the console script: ``serve`` and ``call`` under one name.

``sota-dispatch serve ARGS`` is ``python -m sota_dispatch.serve ARGS`` and
``sota-dispatch call ARGS`` is ``python -m sota_dispatch.call ARGS``; both
``python -m`` forms stay, for environments without the script on PATH.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence

__all__ = ["main"]

_COMMANDS = {
    "serve": "serve a protocol locally, or proxy it (python -m sota_dispatch.serve)",
    "call": "send requests to a server of any protocol and print the answers (python -m sota_dispatch.call)",
}

_USAGE = "usage: sota-dispatch {serve,call} ... | --version | --help\n"


def _help() -> str:
    lines = [_USAGE, "The dispatcher SDK's command line.\n", "commands:"]
    lines += [f"  {name:<7} {text}" for name, text in _COMMANDS.items()]
    lines.append("\n'sota-dispatch COMMAND --help' describes each command's options.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help", "help"):
        sys.stdout.write(_help())
        return 0 if arguments else 2
    command, rest = arguments[0], arguments[1:]
    if command == "--version":
        from ..serve import version_line

        print(version_line())
        return 0
    if command == "serve":
        from ..serve import main as serve

        return serve(rest, prog="sota-dispatch serve")
    if command == "call":
        from ..call import main as call

        return call(rest, prog="sota-dispatch call")
    close = difflib.get_close_matches(command, list(_COMMANDS), n=1, cutoff=0.8)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    sys.stderr.write(f"error: unknown command {command!r} (commands: serve, call){hint}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
