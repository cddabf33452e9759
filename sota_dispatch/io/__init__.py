"""Bytes in and out of one connection: the buffered reader and writer, the
chunk buffer sans-I/O codecs keep their unparsed tail in, the outbox that
gives each connection one send per batch, the process's buffer budget, and
(``transport``) the one module that reaches under anyio's streams.

Nothing here knows of frames, protocols or proxies: it is the lowest layer.
"""

__all__: list[str] = []
