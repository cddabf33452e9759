"""Buffered reading from a byte stream, for protocol parsers.

The reader owns the bytes that arrived but were not yet consumed (a
``bytearray`` plus a read offset), so a dispatcher can stop at a frame
boundary and hand those bytes over (hot restart), and so one large receive
(up to 256 KiB by default) serves every frame that arrived with it. Before it blocks
on the socket it flushes the paired writer: that is what turns "answer each
request" into "one send per batch of requests".
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Final

import anyio
from anyio.abc import ByteReceiveStream
from mypy_extensions import mypyc_attr

from ..errors import FrameTimeout, IncompleteReadError, LimitExceeded
from .chunk_iterator import ChunkIterator
from .clock import loop_time
from .timeouts import InputAlarm, ReadTimeouts
from .transport import inline_input, input_alarm, prepare_input, ready_input

if TYPE_CHECKING:
    from .writer import BufferedWriter

__all__ = ["DEFAULT_READ_SIZE", "BufferedReader", "ReadTimeouts"]

#: Bytes asked per receive where a read takes what it asks (trio, TLS); see design.rst.
DEFAULT_READ_SIZE = 262144
#: A frame clock that starts when the reader next waits for input: the rest
#: of a pipelined frame is the peer's to send only once we ask for it, so the
#: time a server spends on the frames before it does not count.
_ON_NEXT_WAIT: Final = -1.0


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class BufferedReader:
    """Pull-style reads over a :class:`anyio.abc.ByteReceiveStream`.

    At a clean end of input (the peer closed between frames) every read
    raises :class:`anyio.EndOfStream`, which :meth:`Dispatcher.run
    <sota_dispatch.Dispatcher.run>` treats as an orderly close. If the peer
    closes in the middle of a read, the read raises
    :class:`~sota_dispatch.IncompleteReadError` carrying the partial bytes.

    A protocol that reads one frame in several calls (header, then body)
    passes ``mid_frame=True`` to the later calls, so that EOF between them is
    reported as a truncated frame rather than a clean close.
    """

    __slots__ = tuple(
        "_alarm _alarm_probed _buf _busy _codec_frames _connected _draining _eof _frame_start _got_bytes"  # noqa: SIM905
        " _idle_scope _idle_wait _interrupted _last_fill _pos _read_size _ready _receive_size _stream _timeouts"
        " _wait_input _wait_scope _writer idle".split()
    )

    def __init__(
        self,
        stream: ByteReceiveStream,
        *,
        read_size: int = DEFAULT_READ_SIZE,
        writer: BufferedWriter | None = None,
    ) -> None:
        if read_size <= 0:
            raise ValueError("read_size must be positive")
        self._stream = stream
        self._read_size = read_size
        self._receive_size = prepare_input(stream, read_size)  # whole chunks, where they are whole already
        ready = ready_input(stream)  # trio's socket, asyncio's queue: taken without receive()
        self._ready: Callable[[int], Awaitable[bytes | None]] | None = None if ready is None else ready[0]
        self._wait_input: Callable[[int], Awaitable[bytes]] = stream.receive if ready is None else ready[1]
        self._writer = writer
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._draining = False
        #: True while blocked on the socket with nothing buffered: the
        #: connection sits between frames, so a drain may stop it right here.
        self.idle = False
        self._timeouts: ReadTimeouts | None = None
        self._busy: Callable[[], bool] | None = None
        # A timed wait under way: its scope, or (asyncio sockets) the
        # connection's alarm, made on the first timed wait; _idle_wait: the
        # wait is between frames.
        self._idle_scope: anyio.CancelScope | None = None
        self._wait_scope: anyio.CancelScope | None = None
        self._alarm: InputAlarm | None = None
        self._alarm_probed = False
        self._idle_wait = False
        self._interrupted = False
        self._connected = 0.0
        self._got_bytes = False
        #: When the frame being received began (None: between frames).
        self._frame_start: float | None = None
        self._last_fill = 0.0
        self._codec_frames = False  # frame_state() tells where frames begin

    # -- state ---------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._buf) - self._pos

    @property
    def last_input(self) -> float:
        """When input last arrived (:func:`anyio.current_time`; the connect
        or zero before any)."""
        return self._last_fill

    @property
    def idle_since(self) -> float | None:
        """While the connection waits between frames under timeouts (see
        :meth:`set_timeouts`): since when it is idle, by its idle clock
        (the last input, or the last answer of a busy connection); None
        otherwise (mid-frame, no timeouts, or not waiting)."""
        timeouts = self._timeouts
        deadline = self._idle_wait_deadline()
        if deadline is None or not self.idle or timeouts is None:
            return None
        if deadline == math.inf or timeouts.idle is None:
            return self._last_fill
        return deadline - timeouts.idle

    @property
    def idle_deadline(self) -> float:
        """When the idle timeout ends the current wait between frames
        (:data:`math.inf`: never, or not waiting between frames)."""
        deadline = self._idle_wait_deadline()
        return math.inf if deadline is None else deadline

    def _idle_wait_deadline(self) -> float | None:
        """The deadline of the wait between frames under way (None: none)."""
        scope = self._idle_scope
        if scope is not None:
            return scope.deadline
        alarm = self._alarm
        if alarm is not None and self._idle_wait:
            return alarm.deadline
        return None

    @property
    def interrupted(self) -> bool:
        """True once :meth:`interrupt` ended the input (a drain of an idle connection)."""
        return self._interrupted

    @property
    def at_eof(self) -> bool:
        """True once the peer closed its side and every byte was consumed
        (not when :meth:`interrupt` ended the input: the peer is still there)."""
        return self._eof and not self._interrupted and self._pos == len(self._buf)

    def drain(self) -> None:
        """Stop at the next frame boundary: a read that starts with nothing
        buffered raises :class:`anyio.EndOfStream` instead of waiting."""
        self._draining = True

    def set_timeouts(self, timeouts: ReadTimeouts | None, *, busy: Callable[[], bool] | None = None) -> None:
        """Enforce ``timeouts`` on every wait for input from now on (the
        server sets its own right after the connect; None: none).

        ``busy``: True while the connection owes the peer answers (a
        proxy's requests in flight); the idle timeout does not run then, and
        :meth:`idle_from_now` starts it when the last answer is out."""
        self._timeouts = timeouts
        self._busy = busy
        self._connected = self._last_fill = loop_time()
        if self._writer is not None:
            # A peer that sends but never reads would hold a flush, and the
            # connection, for good.
            self._writer.send_timeout = None if timeouts is None else timeouts.frame

    def interrupt(self) -> bool:
        """End a wait for the first bytes of a frame as if the peer had
        closed (a drain of an idle connection), without a cancel scope of
        the caller's around every read. True if such a wait was ended; the
        reader can interrupt only under timeouts (:meth:`set_timeouts`),
        whose waits have a scope or an alarm anyway (input that arrived just
        before the interrupt is still read: the drain then stops after it)."""
        if not self.idle:
            return False
        scope = self._wait_scope
        if scope is not None:
            self._interrupted = True
            scope.cancel()
            return True
        alarm = self._alarm
        if alarm is not None and alarm.waiting:
            self._interrupted = True
            alarm.wake()
            return True
        return False

    def idle_from_now(self) -> None:
        """The connection is no longer busy (see :meth:`set_timeouts`): a
        wait for input between frames is idle from now on."""
        timeouts = self._timeouts
        if timeouts is None or timeouts.idle is None:
            return
        # Only a wait that began busy has no deadline; moving one that has
        # would cost a timer handle per answer (with an alarm, a float).
        scope = self._idle_scope
        if scope is not None:
            if scope.deadline == math.inf:
                scope.deadline = loop_time() + timeouts.idle
            return
        alarm = self._alarm
        if alarm is not None and self._idle_wait and alarm.deadline == math.inf:
            alarm.expect(loop_time() + timeouts.idle)

    def frame_state(self, buffered: int, completed: int) -> None:
        """For a sans-I/O codec fed from :meth:`read_some` or :meth:`chunks`,
        which the reader cannot see into: after each feed, the bytes the
        codec holds of a frame not complete yet and the frames the feed
        completed. The frame timeout then runs from the first byte of the
        frame in progress (cheap: call it after every feed). Without it,
        each chunk :meth:`read_some` returns counts as whole frames."""
        self._codec_frames = True
        if not buffered:
            self._frame_start = None
        elif completed:
            self._frame_start = _ON_NEXT_WAIT
        elif self._frame_start is None:
            self._frame_start = self._last_fill  # the partial frame began in the last chunk

    def release(self) -> None:
        """The connection is closed: drop the bytes not consumed and the
        writer (the two refer to each other; left so, a closed connection's
        buffers would wait for the cyclic garbage collector)."""
        self._buf = bytearray()
        self._pos = 0
        self._writer = None
        alarm = self._alarm
        if alarm is not None:
            alarm.close()
        inline_input(self._stream, None)  # a taker of input refers to its connection

    def push_back(self, data: bytes) -> None:
        """Put bytes read from the stream before this reader (to tell TLS
        from plaintext, say) in front of everything else."""
        self._buf[self._pos : self._pos] = data

    def take_buffer(self) -> bytes:
        """Remove and return every unconsumed byte (for a connection hand-off)."""
        data = bytes(self._buf[self._pos :])
        self._buf = bytearray()
        self._pos = 0
        return data

    # -- the one place that touches the socket -------------------------------

    async def _fill(self, starts_frame: bool) -> bool:
        """Receive one chunk into the buffer; False at end of input."""
        data = await self._receive(starts_frame)
        if data is None:
            return False
        self._buf += data
        return True

    async def _receive(self, starts_frame: bool) -> bytes | None:
        """Receive one chunk (None at end of input), with the buffer empty
        of what was consumed: :meth:`_fill` keeps it, :meth:`read_some`
        may hand it out as it came."""
        if self._eof:
            return None
        writer = self._writer
        if writer is not None and writer.pending:
            await writer.flush()
        empty = self._pos == len(self._buf)
        if self._draining and starts_frame and empty:
            raise anyio.EndOfStream
        if self._pos:
            if empty:
                self._buf.clear()
            else:
                del self._buf[: self._pos]
            self._pos = 0
        ready = self._ready
        if ready is not None:  # input there already needs no wait, so no scope (io.transport.ready_input)
            data = await ready(self._receive_size)
            if data is not None:
                self._input_arrived()
                return data
        self.idle = starts_frame and empty
        try:
            if self._timeouts is None:
                data = await self._wait_input(self._receive_size)
                self._last_fill = loop_time()
            else:
                data = await self._receive_in_time()
        except anyio.EndOfStream:
            self._eof = True
            return None
        finally:
            self.idle = False
        return data

    async def _receive_in_time(self) -> bytes:
        if not self._alarm_probed:
            self._alarm_probed = True
            self._alarm = input_alarm(self._stream)
        alarm, timeouts = self._alarm, self._timeouts
        assert timeouts is not None
        limit = self._wait_deadline()
        data = b""
        if alarm is not None:  # no scope: the connection's alarm ends the wait (io.timeouts)
            alarm.expect(limit)
            alarm.fired = False
            alarm.waiting = True
            try:
                data = await self._wait_input(self._receive_size)
            except anyio.EndOfStream:
                if not alarm.fired:
                    raise  # the peer closed
                # The wait's kind now: input taken inline (wait_on) may have changed it.
                if not (self._idle_wait or self._interrupted):
                    raise FrameTimeout(f"no complete request within {timeouts.frame:g}s") from None
                raise  # idle too long, or interrupted: an orderly end, as if the peer had closed
            finally:
                alarm.waiting = False
                self._idle_wait = False
            if not data:
                return data  # a taker of input handed work on to the task (inline_input): no input
        else:
            idle = self._idle_wait
            self._idle_wait = False
            with anyio.CancelScope(deadline=limit) as scope:
                self._wait_scope = scope
                if idle:
                    self._idle_scope = scope
                try:
                    data = await self._wait_input(self._receive_size)
                finally:
                    self._idle_scope = self._wait_scope = None
            if scope.cancelled_caught:
                if idle or self._interrupted:
                    raise anyio.EndOfStream  # idle too long: an orderly end, as if the peer had closed
                raise FrameTimeout(f"no complete request within {timeouts.frame:g}s")
        self._input_arrived()
        return data

    def _wait_deadline(self) -> float:
        """When the wait for input about to start (or under way) must end
        (inf: never); sets ``_idle_wait``. Between frames (no frame begun:
        set by the read calls, or by frame_state() for codecs) the idle
        timeout applies; within one, the frame timeout from its first byte;
        before any byte, the frame timeout from the connect."""
        timeouts = self._timeouts
        assert timeouts is not None
        if self._frame_start == _ON_NEXT_WAIT:
            self._frame_start = loop_time()
        self._idle_wait = False
        if timeouts.frame is not None and self._frame_start is not None:
            return self._frame_start + timeouts.frame
        if timeouts.frame is not None and not self._got_bytes:  # from the connect to the first byte
            return self._connected + timeouts.frame
        # Between frames, or with no frame timeout: a silent peer is idle.
        self._idle_wait = True
        busy = self._busy
        limit = timeouts.idle
        return math.inf if limit is None or (busy is not None and busy()) else loop_time() + limit

    def _input_arrived(self) -> None:
        # Input came, even if the alarm rang (or an interrupt woke us)
        # meanwhile: it ended nothing, and a drain stops at the boundary.
        self._interrupted = False
        now = self._last_fill = loop_time()
        self._got_bytes = True
        if self._frame_start is None:
            self._frame_start = now  # these bytes begin a frame

    # -- input taken where it arrives (io.transport.inline_input) ---------------

    def offer_input(self, taker: Callable[[bytes], bool] | None) -> Callable[[], None] | None:
        """Offer each chunk to ``taker`` where it arrives (None: this stream
        cannot); the function returned hands work on to the waiting read."""
        return inline_input(self._stream, taker)

    def took_input(self) -> bool:
        """A chunk arrived for the read under way: True if a taker may use it
        where it is (the read waits, with an alarm, and nothing ended it);
        it then counts as input. The taker calls :meth:`wait_on` after."""
        alarm = self._alarm
        if alarm is None or not alarm.waiting or alarm.fired or self._pos != len(self._buf):
            return False
        self._input_arrived()
        return True

    def wait_on(self) -> None:
        """The read under way waits on after input taken (and the codec's
        :meth:`frame_state`), until the deadline the state now calls for."""
        alarm = self._alarm
        assert alarm is not None
        limit = self._wait_deadline()
        self.idle = self._frame_start is None
        alarm.expect(limit)

    def _new_frame(self) -> None:
        # A read for a new frame: if the start of it is buffered already
        # (pipelined), its clock starts when we next wait for the rest.
        self._frame_start = None if self._pos == len(self._buf) else _ON_NEXT_WAIT

    def _truncated(self, expected: int | None, mid_frame: bool) -> BaseException:
        partial = bytes(self._buf[self._pos :])
        self._pos = len(self._buf)
        if not partial and not mid_frame:
            return anyio.EndOfStream()
        return IncompleteReadError(partial, expected)

    # -- reads ---------------------------------------------------------------

    async def read_exactly(self, n: int, *, mid_frame: bool = False) -> bytes:
        """Return exactly ``n`` bytes, waiting for them to arrive."""
        if n < 0:
            raise ValueError("n must not be negative")
        if not mid_frame:
            self._new_frame()
        starts_frame = not mid_frame and self._pos == len(self._buf)
        while len(self._buf) - self._pos < n:
            if not await self._fill(starts_frame):
                raise self._truncated(n, mid_frame)
        pos = self._pos
        self._pos = pos + n
        return bytes(self._buf[pos : pos + n])

    async def read_until(self, delimiter: bytes, max_bytes: int, *, mid_frame: bool = False) -> bytes:
        """Return the bytes before ``delimiter`` and consume both.

        Raises :class:`~sota_dispatch.LimitExceeded` as soon as more than
        ``max_bytes`` bytes arrived without the delimiter, without buffering
        the rest of the oversized line.
        """
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        if not mid_frame:
            self._new_frame()
        buf = self._buf
        dlen = len(delimiter)
        start = self._pos
        starts_frame = not mid_frame and start == len(buf)
        while True:
            pos = self._pos
            idx = buf.find(delimiter, start, pos + max_bytes + dlen)
            if idx >= 0:
                self._pos = idx + dlen
                return bytes(buf[pos:idx])
            if len(buf) - pos >= max_bytes + dlen:
                raise LimitExceeded(f"line without {delimiter!r}", max_bytes)
            scanned = len(buf) - pos
            if not await self._fill(starts_frame):
                raise self._truncated(None, mid_frame)
            buf = self._buf
            # Resume the search where it stopped (the buffer may have moved).
            start = self._pos + max(0, scanned - dlen + 1)

    async def read_some(self, max_bytes: int | None = None) -> bytes:
        """Return what is buffered, or wait for the next chunk.

        Raises :class:`anyio.EndOfStream` at the end of input.
        """
        if not self._codec_frames:
            self._frame_start = None
        # For a codec (frame_state), a frame in progress is no boundary: a
        # drain must not stop it halfway.
        starts_frame = self._frame_start is None
        if self._pos == len(self._buf):
            data = await self._receive(starts_frame)
            if data is None:
                raise anyio.EndOfStream
            if max_bytes is None or len(data) <= max_bytes:
                # Nothing buffered: the chunk goes out as it came, not
                # copied into the buffer and out again (two copies of each
                # read batch, a codec loop's every read).
                return data if type(data) is bytes else bytes(data)
            self._buf += data
        pos = self._pos
        end = len(self._buf) if max_bytes is None else min(len(self._buf), pos + max_bytes)
        self._pos = end
        return bytes(memoryview(self._buf)[pos:end])  # one copy (a bytearray slice is one more)

    async def peek(self, n: int) -> bytes:
        """Return up to ``n`` bytes without consuming them.

        Waits until ``n`` bytes are buffered; returns fewer only at the end of
        input. Used for protocol sniffing.
        """
        starts_frame = self._pos == len(self._buf)
        while len(self._buf) - self._pos < n and await self._fill(starts_frame):
            pass
        return bytes(self._buf[self._pos : self._pos + n])

    def chunks(self) -> AsyncIterator[bytes]:
        """Every chunk of input until a clean end of input, buffered bytes first:
        the feed loop of sans-I/O codecs (``codec.feed(data)`` per chunk)."""
        return ChunkIterator(self.read_some)
