"""Error and log wording an operator reads: named errnos, plurals."""

from __future__ import annotations

import ssl
import sys

import anyio
import pytest

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

from sota_dispatch import describe_os_error
from sota_dispatch.logs import plural
from sota_dispatch.testing import free_port

pytestmark = pytest.mark.anyio


async def test_a_refused_connect_is_named_by_its_errno() -> None:
    port = free_port()
    with pytest.raises(OSError, match=r"connection attempts failed|refused") as info:
        await anyio.connect_tcp("127.0.0.1", port)
    # anyio says "All connection attempts failed"; the cause says why.
    assert describe_os_error(info.value) == "connection refused (ECONNREFUSED)"


def test_errors_without_an_errno_keep_their_text() -> None:
    assert describe_os_error(ValueError("bad")) == "bad"
    assert describe_os_error(TimeoutError()) == "TimeoutError"
    group = ExceptionGroup("two", [ValueError("x"), ConnectionResetError(104, "reset")])
    assert describe_os_error(group) == "connection reset by peer (ECONNRESET)"


def test_a_tls_error_keeps_its_own_text() -> None:
    # SSLError is an OSError whose errno is OpenSSL's (1: SSL_ERROR_SSL), not EPERM.
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    wrapped = OSError("All connection attempts failed")
    wrapped.__cause__ = error
    assert "CERTIFICATE_VERIFY_FAILED" in describe_os_error(wrapped)
    assert "EPERM" not in describe_os_error(wrapped)


def test_plurals() -> None:
    assert [plural(n, "endpoint") for n in (0, 1, 2)] == ["0 endpoints", "1 endpoint", "2 endpoints"]
