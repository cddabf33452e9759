"""A protocol on a connection: the :class:`Dispatcher` a protocol subclasses,
what a protocol declares for the proxy (its codec and frame semantics), the
stream multiplexer for request ids, the registry of installed protocols, and
the :class:`Server` that runs one per accepted connection.

Builds on :mod:`sota_dispatch.io`; knows nothing of routes or clusters.
"""

__all__: list[str] = []
