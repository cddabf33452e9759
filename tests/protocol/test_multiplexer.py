from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sota_dispatch import ConnectionLost, StreamLimitError, StreamMultiplexer, StreamTimeout, UpstreamError

pytestmark = pytest.mark.anyio


def test_ids_wrap_at_width_and_skip_ids_in_flight() -> None:
    mux: StreamMultiplexer[str] = StreamMultiplexer(id_bits=3, first_id=1, max_in_flight=6)
    first = [mux.open().stream_id for _ in range(5)]
    assert first == [1, 2, 3, 4, 5]
    assert mux.complete(2, "two")
    assert mux.open().stream_id == 6
    assert mux.open().stream_id == 7
    # 7 is the largest 3-bit id: wrap to first_id, skipping 1 (in flight), reuse 2.
    mux.complete(7, "x")
    assert mux.open().stream_id == 2


def test_complete_unknown_or_twice_returns_false_and_counts() -> None:
    mux: StreamMultiplexer[int] = StreamMultiplexer()
    stream = mux.open()
    assert mux.complete(stream.stream_id, 1)
    assert not mux.complete(stream.stream_id, 2)
    assert not mux.complete(999, 3)
    assert mux.unmatched == 2


def test_max_in_flight_is_enforced() -> None:
    mux: StreamMultiplexer[int] = StreamMultiplexer(max_in_flight=2)
    mux.open()
    mux.open()
    with pytest.raises(StreamLimitError, match="max_in_flight=2"):
        mux.open()


def test_explicit_ids_must_not_collide() -> None:
    mux: StreamMultiplexer[int] = StreamMultiplexer()
    mux.open(42)
    with pytest.raises(ValueError, match="42"):
        mux.open(42)


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        StreamMultiplexer(id_bits=2, first_id=1, max_in_flight=3)
    with pytest.raises(ValueError, match="first_id"):
        StreamMultiplexer(id_bits=8, first_id=256)


async def test_result_waits_for_complete() -> None:
    mux: StreamMultiplexer[bytes] = StreamMultiplexer()
    stream = mux.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _complete_later(mux, stream.stream_id, b"answer"))
        with anyio.fail_after(5):
            assert await stream.result() == b"answer"
    assert stream.done


async def _complete_later(mux: StreamMultiplexer[bytes], stream_id: int, value: bytes) -> None:
    await anyio.lowlevel.checkpoint()
    mux.complete(stream_id, value)


async def test_timeout_releases_the_id_and_late_answer_is_rejected() -> None:
    mux: StreamMultiplexer[bytes] = StreamMultiplexer(timeout=0.01)
    stream = mux.open()
    with pytest.raises(StreamTimeout):
        await stream.result()
    assert stream.stream_id not in mux
    assert not mux.complete(stream.stream_id, b"late")
    assert mux.unmatched == 1


async def test_result_timeout_argument_narrows_the_deadline() -> None:
    mux: StreamMultiplexer[bytes] = StreamMultiplexer(timeout=3600)
    stream = mux.open()
    with pytest.raises(StreamTimeout):
        await stream.result(timeout=0.01)
    assert len(mux) == 0


async def test_fail_all_wakes_every_waiter_with_the_error() -> None:
    mux: StreamMultiplexer[bytes] = StreamMultiplexer()
    streams = [mux.open() for _ in range(3)]
    errors: list[BaseException] = []

    async def wait(i: int) -> None:
        try:
            await streams[i].result()
        except ConnectionLost as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(wait, i)
            await anyio.wait_all_tasks_blocked()
            assert mux.fail_all(ConnectionLost(None)) == 3
    assert len(errors) == 3
    assert len(mux) == 0


async def test_close_refuses_new_streams() -> None:
    mux: StreamMultiplexer[bytes] = StreamMultiplexer()
    mux.close(ConnectionLost(None))
    with pytest.raises(ConnectionLost):
        mux.open()


async def test_cancel_releases_id() -> None:
    mux: StreamMultiplexer[bytes] = StreamMultiplexer()
    stream = mux.open()
    stream.cancel()
    assert len(mux) == 0
    with pytest.raises(UpstreamError, match="cancelled"):
        await stream.result()
    assert not mux.complete(stream.stream_id, b"late")


async def test_caller_cancellation_releases_id() -> None:
    mux: StreamMultiplexer[bytes] = StreamMultiplexer()
    stream = mux.open()
    with anyio.move_on_after(0.01):
        await stream.result()
    assert len(mux) == 0


# -- property: ids are unique while in flight, across wraparound --------------


class MultiplexerMachine(RuleBasedStateMachine):
    """Random open/complete/fail sequences on a tiny id space that wraps often."""

    def __init__(self) -> None:
        super().__init__()
        self.mux: StreamMultiplexer[int] = StreamMultiplexer(id_bits=4, first_id=1, max_in_flight=10)
        self.in_flight: set[int] = set()
        self.retired: set[int] = set()

    @precondition(lambda self: len(self.in_flight) < 10)
    @rule()
    def open(self) -> None:
        stream_id = self.mux.open().stream_id
        assert stream_id not in self.in_flight, f"id {stream_id} reused while in flight"
        assert 1 <= stream_id <= 15
        self.in_flight.add(stream_id)
        self.retired.discard(stream_id)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        stream_id = data.draw(st.sampled_from(sorted(self.in_flight)))
        assert self.mux.complete(stream_id, stream_id)
        self.in_flight.remove(stream_id)
        self.retired.add(stream_id)

    @precondition(lambda self: self.retired)
    @rule(data=st.data())
    def late_answer(self, data: st.DataObject) -> None:
        stream_id = data.draw(st.sampled_from(sorted(self.retired)))
        before = self.mux.unmatched
        assert not self.mux.complete(stream_id, -1)
        assert self.mux.unmatched == before + 1

    @rule()
    def open_full(self) -> None:
        if len(self.in_flight) >= 10:
            with pytest.raises(StreamLimitError):
                self.mux.open()

    @invariant()
    def counts_agree(self) -> None:
        assert self.mux.in_flight == len(self.in_flight)


TestMultiplexerMachine = MultiplexerMachine.TestCase
TestMultiplexerMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


@given(st.integers(min_value=1, max_value=32), st.integers(min_value=0, max_value=200))
def test_allocation_cycles_through_the_whole_space(bits: int, opens: int) -> None:
    mux: StreamMultiplexer[int] = StreamMultiplexer(id_bits=bits, first_id=0, max_in_flight=1)
    last = -1
    for _ in range(opens):
        stream_id = mux.open().stream_id
        assert 0 <= stream_id < 2**bits
        if last >= 0:
            assert stream_id == (last + 1) % 2**bits
        mux.complete(stream_id, 0)
        last = stream_id


# -- add/take: the proxy's entries, ids allocated inline ----------------------


def test_add_wraps_at_width_and_skips_ids_in_flight() -> None:
    mux: StreamMultiplexer[str] = StreamMultiplexer(id_bits=3, first_id=1, max_in_flight=6)
    assert [mux.add("x") for _ in range(5)] == [1, 2, 3, 4, 5]
    assert mux.take(2) == "x"
    assert mux.add("y") == 6
    assert mux.add("z") == 7
    assert mux.take(7) == "z"
    # 7 is the largest 3-bit id: wrap to first_id, skipping 1 (in flight), reuse 2.
    assert mux.add("w") == 2
    assert mux.take(1) == "x"
    assert mux.take(1) is None
    assert mux.unmatched == 1


@given(
    st.lists(
        st.sampled_from(["add", "add", "take"]).flatmap(
            lambda kind: st.just(kind) if kind == "add" else st.integers(min_value=0, max_value=15)
        ),
        min_size=40,
        max_size=200,
    )
)
def test_add_and_take_never_hand_out_an_id_in_flight(steps: list[str | int]) -> None:
    """The proxy's path (add, take by id) on a 4-bit space that wraps often:
    an id is never given twice while held, take returns what add stored and
    counts an unknown id, and the limit holds."""
    mux: StreamMultiplexer[str] = StreamMultiplexer(id_bits=4, first_id=1, max_in_flight=10)
    held: dict[int, str] = {}
    for number, step in enumerate(steps):
        if step == "add":
            if len(held) >= 10:
                with pytest.raises(StreamLimitError):
                    mux.add("over")
                continue
            stream_id = mux.add(f"entry {number}")
            assert 1 <= stream_id <= 15
            assert stream_id not in held, f"id {stream_id} handed out while in flight"
            held[stream_id] = f"entry {number}"
        else:
            assert isinstance(step, int)
            unmatched = mux.unmatched
            expected = held.pop(step, None)
            assert mux.take(step) == expected
            assert mux.unmatched == unmatched + (expected is None)
        assert mux.in_flight == len(held)


def test_add_after_close_raises_the_close_reason() -> None:
    mux: StreamMultiplexer[str] = StreamMultiplexer()
    assert mux.add("a") == 1
    mux.close(UpstreamError("gone"))
    with pytest.raises(UpstreamError, match="gone"):
        mux.add("b")


# -- the ring of add()'s entries ------------------------------------------------


@given(
    bits=st.integers(min_value=2, max_value=64),
    first=st.integers(min_value=0, max_value=3),
    limit=st.integers(min_value=1, max_value=40),
    start=st.integers(min_value=0, max_value=2**64 - 1),
    steps=st.lists(
        st.one_of(
            st.just("add"),  # four of ten: the ring fills and grows
            st.just("add"),
            st.just("add"),
            st.just("add"),
            st.just("unused"),
            st.just("take_all"),
            st.tuples(st.sampled_from(["take", "discard", "get", "in"]), st.integers(min_value=0, max_value=80)),
            st.tuples(st.just("take_known"), st.integers(min_value=0, max_value=10**6)),
            st.tuples(st.just("foreign"), st.integers(min_value=-(2**70), max_value=2**70)),
        ),
        min_size=60,
        max_size=250,
    ),
)
def test_the_ring_agrees_with_a_dict(bits: int, first: int, limit: int, start: int, steps: list[object]) -> None:
    """add/take/discard/get/contains/unused_id/take_all against a dict model,
    on id spaces smaller and larger than the ring, wrapping: ids are never
    handed out twice while held, an answer matches only the entry of its own
    id (never one that merely shares its slot), foreign ids (any int a peer
    may send) match nothing, and the ring never outgrows the limit."""
    space = 2**bits - first
    limit = min(limit, space - 1)
    if limit < 1:
        return
    mux: StreamMultiplexer[str] = StreamMultiplexer(id_bits=bits, first_id=first, max_in_flight=limit)
    mux._next = max(first, start % 2**bits)  # ids start anywhere: held ones have high bits when the ring grows
    held: dict[int, str] = {}
    for number, step in enumerate(steps):
        if step == "add":
            if len(held) >= limit:
                with pytest.raises(StreamLimitError):
                    mux.add("over")
                continue
            stream_id = mux.add(f"entry {number}")
            assert first <= stream_id < 2**bits
            assert stream_id not in held, f"id {stream_id} handed out while in flight"
            held[stream_id] = f"entry {number}"
        elif step == "unused":
            stream_id = mux.unused_id()
            assert first <= stream_id < 2**bits
            assert stream_id not in held
        elif step == "take_all":
            assert sorted(mux.take_all()) == sorted(held.values())
            held.clear()
        else:
            assert isinstance(step, tuple)
            kind, number_or_id = step
            if kind == "take_known":
                if not held:
                    continue
                stream_id = sorted(held)[number_or_id % len(held)]
                kind = "take"
            else:
                stream_id = number_or_id
            unmatched = mux.unmatched
            if kind in ("take", "foreign"):
                expected = held.pop(stream_id, None)
                assert mux.take(stream_id) == expected
                assert mux.unmatched == unmatched + (expected is None)
            elif kind == "discard":
                assert mux.discard(stream_id) == (held.pop(stream_id, None) is not None)
            elif kind == "get":
                assert mux.get(stream_id) == held.get(stream_id)
            else:
                assert (stream_id in mux) == (stream_id in held)
        assert mux.in_flight == len(mux) == len(held)
        assert len(mux._entries) <= max(16, 2 ** (2 * limit - 1).bit_length())


def test_an_answer_that_shares_a_held_slot_matches_nothing() -> None:
    """Ids 1 and 17 share slot 1 of a 16-slot ring: an answer for 17 while
    1 is held must not take 1's entry (that would hand one client's answer
    to another's request)."""
    mux: StreamMultiplexer[str] = StreamMultiplexer(max_in_flight=4)
    assert mux.add("first") == 1
    assert mux.take(17) is None
    assert mux.get(17) is None
    assert 17 not in mux
    assert not mux.discard(17)
    assert mux.unmatched == 1
    assert mux.take(1) == "first"


def test_a_request_never_answered_costs_one_slot_lap_after_lap() -> None:
    """A stuck request keeps its slot; the ids run past it and wrap, and
    the ring does not grow for it."""
    mux: StreamMultiplexer[str] = StreamMultiplexer(id_bits=8, first_id=1, max_in_flight=4)
    stuck = mux.add("stuck")
    seen = set()
    for _ in range(2_000):
        stream_id = mux.add("x")
        assert stream_id != stuck
        assert (stream_id - stuck) % 16 != 0
        seen.add(stream_id)
        assert mux.take(stream_id) == "x"
    assert len(seen) > 200  # the whole 8-bit space but the stuck slot's ids, many laps
    assert len(mux._entries) == 16
    assert mux.take(stuck) == "stuck"


def test_a_growing_ring_keeps_every_entry_findable() -> None:
    """Entries move to their slot under the doubled mask (ids with high
    bits set, held across two doublings)."""
    mux: StreamMultiplexer[int] = StreamMultiplexer(max_in_flight=100)
    for _ in range(200):  # one at a time: the ring stays at 16 slots
        assert mux.take(mux.add(0)) == 0
    assert len(mux._entries) == 16
    held = {mux.add(n): n for n in range(40)}  # ids 201..240: the ring doubles three times
    assert len(mux._entries) == 128
    assert all(mux.take(stream_id) == n for stream_id, n in held.items())


def test_fail_all_and_close_drop_the_entries() -> None:
    mux: StreamMultiplexer[str] = StreamMultiplexer()
    ids = [mux.add(f"e{n}") for n in range(20)]
    assert mux.fail_all(UpstreamError("gone")) == 20
    assert mux.in_flight == 0
    assert all(mux.take(i) is None for i in ids)
    assert mux.add("again") == 21
