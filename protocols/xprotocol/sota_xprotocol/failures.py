"""Protocol-level error replies for requests a proxy cannot serve.

Errors are replies, never silence: each failure a proxy meets (no route, no
healthy upstream, overflow, timeout, upstream reset, a request it cannot
decode) maps to the protocol's own status. The table follows MOSN's hijack
mapping (xprotocol-notes, "Hijack") where it is precise, and departs from it
where a more exact status exists: an upstream reset is bolt
CONNECTION_CLOSED (MOSN: UNKNOWN or NO_PROCESSOR), a timeout is dubbo
SERVER_TIMEOUT (the proxy is the server to its client; MOSN: CLIENT_TIMEOUT),
and an undecodable request is dubbo BAD_REQUEST. A stream filter's refusals:
a denied request is bolt ERROR and dubbo BAD_REQUEST ("403"), a
rate-limited one bolt SERVER_THREADPOOL_BUSY and dubbo
SERVER_THREADPOOL_EXHAUSTED_ERROR (what a SOFA or dubbo server sheds load
with, which their clients know to retry elsewhere), and the proxy's own
failure bolt SERVER_EXCEPTION and dubbo SERVER_ERROR. :class:`Failure` itself is
the core's (``sota_dispatch.Failure``), re-exported here.
"""

from __future__ import annotations

import sota_xprotocol.bolt as bolt
import sota_xprotocol.dubbo as dubbo
from sota_dispatch import Failure

__all__ = ["Failure", "bolt_error_reply", "dubbo_error_reply"]


BOLT_STATUS: dict[Failure, bolt.ResponseStatus] = {
    Failure.NO_ROUTE: bolt.ResponseStatus.NO_PROCESSOR,
    Failure.NO_HEALTHY_UPSTREAM: bolt.ResponseStatus.NO_PROCESSOR,
    Failure.OVERFLOW: bolt.ResponseStatus.SERVER_THREADPOOL_BUSY,
    Failure.TIMEOUT: bolt.ResponseStatus.TIMEOUT,
    Failure.UPSTREAM_RESET: bolt.ResponseStatus.CONNECTION_CLOSED,
    Failure.CODEC_ERROR: bolt.ResponseStatus.CODEC_EXCEPTION,
    Failure.DENIED: bolt.ResponseStatus.ERROR,
    Failure.RATE_LIMITED: bolt.ResponseStatus.SERVER_THREADPOOL_BUSY,
    Failure.INTERNAL: bolt.ResponseStatus.SERVER_EXCEPTION,
}

DUBBO_STATUS: dict[Failure, tuple[dubbo.DubboStatus, str]] = {
    Failure.NO_ROUTE: (dubbo.DubboStatus.SERVICE_NOT_FOUND, "404|router unavailable"),
    Failure.NO_HEALTHY_UPSTREAM: (dubbo.DubboStatus.SERVICE_NOT_FOUND, "502|no healthy upstream"),
    Failure.OVERFLOW: (dubbo.DubboStatus.BAD_REQUEST, "503|upstream overflow"),
    Failure.TIMEOUT: (dubbo.DubboStatus.SERVER_TIMEOUT, "504|timeout"),
    Failure.UPSTREAM_RESET: (dubbo.DubboStatus.SERVICE_ERROR, "502|upstream connection reset"),
    Failure.CODEC_ERROR: (dubbo.DubboStatus.BAD_REQUEST, "400|codec error"),
    Failure.DENIED: (dubbo.DubboStatus.BAD_REQUEST, "403|denied"),
    Failure.RATE_LIMITED: (dubbo.DubboStatus.SERVER_THREADPOOL_EXHAUSTED_ERROR, "429|rate limited"),
    Failure.INTERNAL: (dubbo.DubboStatus.SERVER_ERROR, "500|internal error"),
}


def bolt_error_reply(request: bolt.BoltFrame, failure: Failure) -> bolt.BoltFrame:
    """A bolt response with the failure's status and no class, header or body."""
    return bolt.BoltFrame(
        bolt.FrameType.RESPONSE,
        bolt.CmdCode.RPC_RESPONSE,
        request.request_id,
        codec=request.codec,
        status=BOLT_STATUS[failure],
        proto=request.proto,
        ver1=request.ver1,
        switch=request.switch,
        ver2=request.ver2,
    )


def dubbo_error_reply(request: dubbo.DubboFrame, failure: Failure, detail: str = "") -> dubbo.DubboFrame:
    """A dubbo response with the failure's status and a hessian2 string body."""
    status, message = DUBBO_STATUS[failure]
    return dubbo.error_response(request, status, f"{message}: {detail}" if detail else message)
