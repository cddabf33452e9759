"""A local service sends a long batch's first replies before answering the rest.

The core's serving loop sends what it has written once ``EARLY_REPLIES``
requests of one read batch are answered, so a pipelining client reads and
sends again while the rest are answered. Over real TCP on 127.0.0.1, with
the tutorial protocol (examples/idproto.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import pytest
from idproto import REQUEST, Frame, IdCodec, IdProto

from sota_dispatch import testing
from sota_dispatch.protocol.serving import EARLY_REPLIES
from sota_dispatch.testing import serving

pytestmark = pytest.mark.anyio


class Watching(IdProto):
    """Records, as each request is answered, the bytes its writer still holds."""

    held: ClassVar[list[int]] = []

    def on_request(self, frame: Any) -> bytes:
        Watching.held.append(self.writer.pending)
        return super().on_request(frame)


async def pipeline(count: int) -> list[int]:
    """``count`` requests in one send; the writer's bytes held at each."""
    Watching.held = []
    async with serving(Watching) as server:
        assert server.address is not None
        async with await testing.connect(server.address) as stream:
            await stream.send(b"".join(Frame.make(REQUEST, i, b"x").raw for i in range(count)))
            codec, answers = IdCodec(1 << 20), list[Frame]()
            with anyio.fail_after(10):
                while len(answers) < count:
                    answers += codec.feed(await stream.receive())
            assert [a.request_id for a in answers] == list(range(count))  # every answer, in order
            assert [a.body for a in answers] == [b"X"] * count
    return Watching.held


async def test_the_first_replies_of_a_long_batch_leave_before_the_rest_are_answered() -> None:
    reply = len(Frame.make(REQUEST, 0, b"X").raw)
    held = await pipeline(2 * EARLY_REPLIES + 4)  # one send: one read batch on the server
    assert held[EARLY_REPLIES - 1] == (EARLY_REPLIES - 1) * reply  # held until the 48th is written
    assert held[EARLY_REPLIES] == 0  # then sent, before the 49th is answered
    # Once per batch: the rest wait for the batch's end.
    assert held[-1] == (len(held) - 1 - EARLY_REPLIES) * reply


async def test_a_short_batch_leaves_in_one_send_at_its_end() -> None:
    reply = len(Frame.make(REQUEST, 0, b"X").raw)
    held = await pipeline(EARLY_REPLIES - 1)
    assert held == [i * reply for i in range(EARLY_REPLIES - 1)]
