"""The core's two test protocols with call support, for the client tool's tests.

The tool knows no protocol; these give it one of each kind without a
plugin: :class:`CallLines` answers in order (lines, no ids, as
simple_line), :class:`CallIds` by id (the tutorial's idproto, as bolt and
dubbo). Both are subclasses that add only ``call_request`` and
``describe_answer``, as a plugin does.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager

import anyio
from anyio.abc import SocketAttribute, SocketStream
from idproto import OK, REQUEST, Frame, IdProto

from sota_dispatch import CallAnswer, register_protocol, unregister_protocol
from sota_dispatch.client import run_call
from sota_dispatch.testing import ECHO_MARK, EchoLines


class CallLines(EchoLines):
    """EchoLines with call support: the words make one line; an answer
    containing ``fail`` is an error answer."""

    @classmethod
    def call_request(cls, words: Sequence[str], fields: Mapping[str, str]) -> bytes:
        if fields:
            raise ValueError("no headers here")
        return ECHO_MARK + " ".join(words).encode() + b"\n"

    @classmethod
    def describe_answer(cls, frame: bytes) -> CallAnswer:
        line = frame.decode().rstrip("\n")
        return CallAnswer(ok="fail" not in line, text=line, data={"line": line})


class CallIds(IdProto):
    """idproto with call support: the words are the body; a status but OK
    is an error answer."""

    @classmethod
    def call_request(cls, words: Sequence[str], fields: Mapping[str, str]) -> Frame:
        return Frame.make(REQUEST, 0, " ".join(words).encode())

    @classmethod
    def describe_answer(cls, frame: Frame) -> CallAnswer:
        body = frame.body.decode()
        return CallAnswer(ok=frame.status == OK, text=body, data={"status": frame.status, "body": body})


@contextmanager
def registered() -> Iterator[None]:
    """``call_lines``, ``call_ids`` and the call-less ``echo_lines`` registered."""
    names = {"call_lines": CallLines, "call_ids": CallIds, "echo_lines": EchoLines}
    for name, cls in names.items():
        register_protocol(name, cls)
    try:
        yield
    finally:
        for name in names:
            unregister_protocol(name)


@asynccontextmanager
async def raw_server(*, answer_after: int | None = None) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that never answers: it reads until the
    client leaves or, with ``answer_after``, closes the connection once it
    has that many bytes (a server that dies mid-request). Its address."""

    async def handle(stream: SocketStream) -> None:
        received = 0
        async with stream:
            try:
                while answer_after is None or received < answer_after:
                    received += len(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    address = listener.extra(SocketAttribute.local_address)
    assert isinstance(address, tuple)
    host, port = address[0], address[1]
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"{host}:{port}"
        tg.cancel_scope.cancel()


async def call(*argv: str) -> tuple[int, str, str]:
    """The tool in this event loop: its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = await run_call(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()
