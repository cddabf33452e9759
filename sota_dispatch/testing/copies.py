"""How much a codec copies to parse a read: bytes allocated and freed again.

A decoder that joins the unfinished frame a read left with the whole next
read copies every byte it receives once more (see
:meth:`~sota_dispatch.ChunkBuffer.fill`); frames come out right, so only
the memory traced while it parses shows it.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

__all__ = ["transient_bytes"]


def transient_bytes(feed: Callable[[bytes], object], opening: bytes, chunk: bytes) -> int:
    """Bytes ``feed(chunk)`` allocated and freed again before it returned,
    ``feed(opening)`` having run first (to leave a frame unfinished).

    The peak of traced memory during the call less what is still held
    after it (the frames it returned are held until then): a decoder that
    copies ``chunk`` whole in passing shows about ``len(chunk)``, one that
    parses it in place a small fraction. ``tracemalloc`` sees what C
    extensions allocate too, so it measures a compiled codec as well.
    """
    feed(opening)
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = feed(chunk)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        if not tracing:
            tracemalloc.stop()
    del result
    return peak - max(held, before)
