"""Shared by every test directory: every async test runs on asyncio, trio and uvloop.

Modules with async tests set ``pytestmark = pytest.mark.anyio``; collection
fails for an async test without it, so none can silently run on one backend
(or not at all). ``echo_lines`` registers the core's test protocol
(:class:`sota_dispatch.testing.EchoLines`) for a test that needs one;
``tls_files`` makes certificates (trustme) for the TLS tests.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from sota_dispatch import register_protocol, unregister_protocol
from sota_dispatch.testing import EchoLines


@pytest.fixture(params=["asyncio", "trio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, bool]]:
    """asyncio with its own loop, trio, and asyncio on uvloop (which the
    bundled server picks whenever it is installed, and whose transports
    fail in their own ways: a reset peer leaves no socket behind)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
        return ("asyncio", {"use_uvloop": True})
    backend: str = request.param
    return backend


@pytest.fixture
def backend_args(anyio_backend: str | tuple[str, dict[str, bool]]) -> list[str]:
    """The ``serve`` command-line flags that run the current test's backend
    in a child process (``--backend asyncio`` alone would pick uvloop)."""
    backend = anyio_backend
    if isinstance(backend, tuple):
        return ["--backend", "asyncio"]
    if backend == "asyncio":
        return ["--backend", "asyncio", "--no-uvloop"]
    return ["--backend", str(backend)]


@pytest.fixture
def echo_lines() -> Iterator[str]:
    """EchoLines registered as ``echo_lines`` for the test (auto-detection
    offers it then); its name."""
    register_protocol("echo_lines", EchoLines)
    yield "echo_lines"
    unregister_protocol("echo_lines")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        is_async = function is not None and inspect.iscoroutinefunction(function)
        if is_async and item.get_closest_marker("anyio") is None:
            raise pytest.UsageError(f"{item.nodeid}: async test without pytestmark = pytest.mark.anyio")


class TlsFiles:
    """Certificates of a test CA (trustme) as PEM files.

    ``cert_chain``/``private_key``: a server certificate for ``localhost``
    and ``127.0.0.1``; ``client_chain``/``client_key``: a client
    certificate for ``client.example``; ``issue()`` makes more from the
    same CA, ``stranger`` is another CA whose certificates nobody trusts.
    """

    def __init__(self, directory: Path) -> None:
        import trustme

        self.directory = directory
        self.ca = trustme.CA()
        self.stranger = trustme.CA()
        self.ca_file = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.cert_chain, self.private_key = self.issue("server", "localhost", "127.0.0.1")
        self.client_chain, self.client_key = self.issue("client", "client.example")

    def _write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)

    def issue(self, stem: str, *names: str, ca: object = None) -> tuple[str, str]:
        """A certificate for ``names`` (from ``ca``, default the test CA): its chain and key files."""
        issuer = self.ca if ca is None else ca
        cert = issuer.issue_cert(*names)  # type: ignore[attr-defined]
        chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        return self._write(f"{stem}.pem", chain), self._write(f"{stem}.key", cert.private_key_pem.bytes())

    def client_context(
        self, *, certificate: tuple[str, str] | None = None, ca_file: str | None = None
    ) -> ssl.SSLContext:
        """A client's context trusting the test CA (or ``ca_file``), with ``certificate`` if given."""
        context = ssl.create_default_context(cafile=ca_file or self.ca_file)
        if certificate is not None:
            context.load_cert_chain(*certificate)
        return context


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """Fresh certificates in ``tmp_path`` (see :class:`TlsFiles`)."""
    return TlsFiles(tmp_path)
