"""sota-xprotocol: SOFA bolt and Dubbo for sota-dispatch.

The sans-I/O layer: :mod:`~sota_xprotocol.hessian2` (our own Hessian
2.0 subset, checked against Java's encodings), :mod:`~sota_xprotocol.bolt`
(bolt v1/v2 frames with the v2 CRC32) and :mod:`~sota_xprotocol.dubbo`
(dubbo frames, lazily decoded invocations, canonical heartbeats and
replies). :class:`BoltDispatcher` and :class:`DubboDispatcher` are the
two protocols' classes (options, codecs, and the frame semantics the
bundled proxy forwards them with); :mod:`~sota_xprotocol.service` holds the
echo services registered as ``bolt``, ``dubbo`` and ``xprotocol``
(auto-detected), and :class:`BoltClient` and :class:`DubboClient` the
multiplexed client role. :class:`JavaDate` is a Java date beyond
``datetime``'s years 1-9999, as decoded from (and encoded to) hessian2.
"""

from __future__ import annotations

from . import bolt, dubbo, hessian2
from .client import BoltClient, DubboClient
from .dispatchers import BoltDispatcher, DubboDispatcher, XProtocolDispatcher
from .failures import Failure, bolt_error_reply, dubbo_error_reply
from .hessian2 import JavaDate
from .service import BoltEchoDispatcher, DubboEchoDispatcher, XProtocolEchoDispatcher

__all__ = [
    "BoltClient",
    "BoltDispatcher",
    "BoltEchoDispatcher",
    "DubboClient",
    "Failure",
    "DubboDispatcher",
    "XProtocolDispatcher",
    "JavaDate",
    "DubboEchoDispatcher",
    "XProtocolEchoDispatcher",
    "bolt_error_reply",
    "dubbo_error_reply",
    "bolt",
    "dubbo",
    "hessian2",
]
