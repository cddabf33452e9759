"""sota-xprotocol: SOFA bolt and Dubbo for sota-dispatch (in progress).

So far: :mod:`sota_xprotocol.hessian2`, our own Hessian 2.0 subset
(decoder, skipper, reply encoder), checked against Java's own encodings.
The bolt and dubbo codecs, their local services and the client role follow.
"""

from __future__ import annotations

from . import hessian2

__all__ = ["hessian2"]
