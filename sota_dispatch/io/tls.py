"""TLS on both sides of the proxy: contexts made from files, and reloaded from them.

A :class:`ServerTLS` terminates TLS on a listener (one or more certificate
chains, chosen by SNI; optional client certificates checked against a CA
bundle and an allow-list of names); a :class:`ClientTLS` originates it to
upstream endpoints (the server verified against a CA and a name, SNI, an
optional client certificate). Both read their files when made and again on
:meth:`~ServerTLS.reload`: a connection takes the context current when it
starts, so rotating certificates never disturbs an open connection, and a
reload that fails keeps the old context.

The handshake runs in the connection's own task, bounded by a timeout, with
anyio's :class:`~anyio.streams.tls.TLSStream` over the socket stream. A TLS
stream is never handed the proxy's direct socket writes
(:mod:`sota_dispatch.io.transport` recognises only anyio's plain socket
streams), so every byte goes through the TLS layer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream
from anyio.streams.tls import TLSAttribute, TLSStream

from ..errors import ConfigError, SotaError

__all__ = [
    "TLS_RECORD",
    "TLS_VERSIONS",
    "ClientTLS",
    "PeerRefused",
    "PrefixedStream",
    "ServerTLS",
    "TLSConnection",
    "connected_to_itself",
    "open_connection",
    "peer_names",
]

log = logging.getLogger(__name__)

#: The first byte of a TLS record carrying a handshake (a ClientHello).
TLS_RECORD = 0x16

#: The lowest TLS versions one may require (TLS 1.2 at least, always).
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class PeerRefused(SotaError):
    """The peer finished the handshake with a certificate we do not accept."""


def peer_names(certificate: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The names a peer certificate (``SSLSocket.getpeercert()``) proves:
    its subject alternative names (DNS, URI, IP, email) and its subject's
    common name."""
    if not certificate:
        return ()
    names = [str(value) for _, value in certificate.get("subjectAltName", ())]
    for rdn in certificate.get("subject", ()):
        names += [str(value) for key, value in rdn if key == "commonName"]
    return tuple(names)


def _load(path: str, load: Callable[[], None], files: Mapping[str, str] = MappingProxyType({})) -> None:
    """``load()``, its problems named by the field of the file concerned
    (``files``: field -> file name, checked first: ssl does not say which
    file it missed)."""
    for field, name in files.items():
        if not os.path.isfile(name):
            raise ConfigError(field, f"no such file: {name}")
    try:
        load()
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(path, f"cannot load: {exc}") from None


def _context(purpose: int, min_version: str, alpn_protocols: Sequence[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = TLS_VERSIONS[min_version]
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if alpn_protocols:
        context.set_alpn_protocols(list(alpn_protocols))
    return context


def _name_matches(pattern: str, name: str) -> bool:
    """``*.example.com`` matches one label in front of ``example.com``."""
    pattern, name = pattern.lower(), name.lower()
    if pattern.startswith("*."):
        head, _, tail = name.partition(".")
        return bool(head) and tail == pattern[2:]
    return pattern == name


class TLSConnection(TLSStream):
    """anyio's TLS stream, closed as servers close TLS: a ``close_notify``
    sent, the peer's not awaited.

    With ``standard_compatible=False`` (a peer that closes without
    ``close_notify`` is a clean end, as nearly every server treats it),
    anyio closes the socket without a ``close_notify`` of its own, and a
    standard client (Python's ssl, OpenSSL) then reports its peer's EOF as
    a protocol violation; with ``True`` it waits for the peer's, which a
    hostile peer never sends. This sends ours and closes. A send that
    meets the peer's end raises BrokenResourceError, as on a socket. It reads the
    stream's TLS objects, which anyio keeps as private fields (checked by
    the TLS tests on every backend).
    """

    async def send(self, item: bytes) -> None:
        # A write can meet the peer's EOF (TLS reads while it writes): for
        # a sender that is a broken stream, as a reset socket is, never the
        # EndOfStream a receiver expects.
        try:
            await super().send(item)
        except anyio.EndOfStream:
            raise anyio.BrokenResourceError("the peer closed the TLS connection") from None

    async def send_eof(self) -> None:
        # TLS has no half-close (anyio says so with NotImplementedError, but
        # raises TypeError instead once the session has no version left,
        # e.g. after the peer's close_notify): callers expect the former.
        raise NotImplementedError("a TLS stream cannot half-close")

    async def aclose(self) -> None:
        try:
            if not self._broken:
                with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: the peer's is not awaited
                    self._ssl_object.unwrap()  # writes our close_notify
                if self._write_bio.pending:
                    with anyio.move_on_after(_CLOSE_NOTIFY_TIMEOUT):
                        await self.transport_stream.send(self._write_bio.read())
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the peer is gone: nothing to tell it
        finally:
            await self.transport_stream.aclose()


#: Seconds a closing connection may spend handing its close_notify to the socket.
_CLOSE_NOTIFY_TIMEOUT = 1.0


class ServerTLS:
    """TLS termination for a listener.

    ``certificates``: ``(cert_chain, private_key, server_names)`` files; the
    first is the default, the others are chosen when a client's SNI matches
    one of their ``server_names`` (exact, or ``*.`` one label). ``ca_file``:
    the CA bundle client certificates are checked against
    (``require_client_certificate``: refuse a client without one).
    ``allowed_names``: when given, a client's certificate must name one of
    them (subject alternative name or common name). A peer that does not
    finish its handshake within ``handshake_timeout`` seconds is dropped.
    ``allow_plaintext``: a client whose first byte does not start a TLS
    record is served in plaintext on the same port.

    Raises :class:`~sota_dispatch.ConfigError` naming the field (relative:
    ``certificates[1].private_key``) when a file cannot be loaded.
    """

    def __init__(
        self,
        certificates: Sequence[tuple[str, str, Sequence[str]]],
        *,
        ca_file: str | None = None,
        require_client_certificate: bool = False,
        allowed_names: Sequence[str] = (),
        min_version: str = "1.2",
        alpn_protocols: Sequence[str] = (),
        handshake_timeout: float = 10.0,
        allow_plaintext: bool = False,
    ) -> None:
        if not certificates:
            raise ConfigError("certificates", "at least one certificate chain and key is needed")
        if min_version not in TLS_VERSIONS:
            raise ConfigError("min_version", f"expected one of {', '.join(TLS_VERSIONS)}, got {min_version!r}")
        if (require_client_certificate or allowed_names) and ca_file is None:
            raise ConfigError("ca_file", "required to check client certificates")
        self.certificates = tuple((chain, key, tuple(names)) for chain, key, names in certificates)
        self.ca_file = ca_file
        self.require_client_certificate = require_client_certificate
        self.allowed_names = tuple(allowed_names)
        self.min_version = min_version
        self.alpn_protocols = tuple(alpn_protocols)
        self.handshake_timeout = handshake_timeout
        self.allow_plaintext = allow_plaintext
        #: Handshakes that failed or were refused (counted, not logged one by one).
        self.handshake_failures = 0
        #: How many times the files were read (1 when made).
        self.generation = 0
        self.context = self._build()

    def reload(self) -> None:
        """Read the files again; new connections get the new certificates.
        Raises :class:`~sota_dispatch.ConfigError` and keeps the old ones
        when a file cannot be loaded."""
        self.context = self._build()

    def _one(self, index: int) -> ssl.SSLContext:
        chain, key, _ = self.certificates[index]
        context = _context(ssl.PROTOCOL_TLS_SERVER, self.min_version, self.alpn_protocols)
        where = f"certificates[{index}]"
        files = {f"{where}.cert_chain": chain, f"{where}.private_key": key}
        _load(f"{where}.cert_chain", lambda: context.load_cert_chain(chain, key), files)
        if self.ca_file is not None:
            ca_file = self.ca_file
            _load("ca_file", lambda: context.load_verify_locations(cafile=ca_file), {"ca_file": ca_file})
            context.verify_mode = ssl.CERT_REQUIRED if self.require_client_certificate else ssl.CERT_OPTIONAL
        return context

    def _build(self) -> ssl.SSLContext:
        contexts = [self._one(i) for i in range(len(self.certificates))]
        default = contexts[0]
        named = [(name, contexts[i]) for i, (_, _, names) in enumerate(self.certificates) for name in names]
        if len(contexts) > 1:

            def choose(socket: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
                if server_name is not None:
                    for pattern, context in named:
                        if _name_matches(pattern, server_name):
                            socket.context = context
                            return

            default.sni_callback = choose
        self.generation += 1
        return default

    async def wrap(self, stream: ByteStream) -> TLSStream:
        """The handshake, as the server, within the handshake timeout.

        Raises :class:`ssl.SSLError`, :class:`TimeoutError`, anyio's stream
        errors, or :class:`PeerRefused` (a certificate not on the allow-list).
        """
        try:
            with anyio.fail_after(self.handshake_timeout):
                tls = await TLSConnection.wrap(
                    stream, server_side=True, ssl_context=self.context, standard_compatible=False
                )
            if self.allowed_names:
                names = peer_names(tls.extra(TLSAttribute.peer_certificate, None))
                if not any(name in self.allowed_names for name in names):
                    await anyio.aclose_forcefully(tls)
                    shown = ", ".join(names) or "no certificate"
                    raise PeerRefused(f"client certificate not allowed ({shown})")
        except BaseException:
            self.handshake_failures += 1
            raise
        return tls

    async def accept(self, stream: SocketStream, where: str | None) -> tuple[ByteStream, bytes] | None:
        """An accepted connection's stream after its handshake, or (with
        ``allow_plaintext``) the plaintext stream and the bytes read to tell;
        None when the peer failed: it is closed, counted, and logged at
        debug level only (a scanner must not flood the log of ``where``)."""
        wrapping = False  # a failure in the handshake is counted by wrap() itself
        try:
            if self.allow_plaintext:
                with anyio.fail_after(self.handshake_timeout):
                    first = await stream.receive()
                if first[0] != TLS_RECORD:
                    return stream, first
                wrapping = True
                return await self.wrap(PrefixedStream(stream, first)), b""
            wrapping = True
            return await self.wrap(stream), b""
        except (OSError, TimeoutError, PeerRefused, anyio.EndOfStream, anyio.BrokenResourceError) as exc:
            if not wrapping:
                self.handshake_failures += 1
            try:
                peer = stream.extra(SocketAttribute.remote_address, None)
            except (OSError, AttributeError, RuntimeError):  # reset already
                peer = None
            log.debug("%s: TLS handshake with %s failed: %r", where, peer, exc)
            await anyio.aclose_forcefully(stream)
            return None


class ClientTLS:
    """TLS origination to a cluster's endpoints.

    The server's certificate is verified against ``ca_file`` (the system's
    CAs without one) and must name ``server_name`` (which is also sent as
    SNI), or the endpoint's host when no name is given; ``verify=False``
    turns both checks off (Envoy's upstream TLS without a validation
    context). ``allowed_names``: instead of that one name, the certificate
    must name one of these (subject alternative name or common name: a
    SPIFFE id, say). ``cert_chain`` and ``private_key``: the client
    certificate an mTLS upstream asks for.
    """

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        server_name: str | None = None,
        cert_chain: str | None = None,
        private_key: str | None = None,
        verify: bool = True,
        allowed_names: Sequence[str] = (),
        min_version: str = "1.2",
        alpn_protocols: Sequence[str] = (),
    ) -> None:
        if min_version not in TLS_VERSIONS:
            raise ConfigError("min_version", f"expected one of {', '.join(TLS_VERSIONS)}, got {min_version!r}")
        if (cert_chain is None) != (private_key is None):
            raise ConfigError("private_key" if private_key is None else "cert_chain", "give both or neither")
        self.ca_file = ca_file
        self.server_name = server_name
        self.cert_chain = cert_chain
        self.private_key = private_key
        self.verify = verify
        self.allowed_names = tuple(allowed_names)
        self.min_version = min_version
        self.alpn_protocols = tuple(alpn_protocols)
        self.generation = 0
        self.context = self._build()

    def reload(self) -> None:
        """Read the files again (see :meth:`ServerTLS.reload`)."""
        self.context = self._build()

    def _build(self) -> ssl.SSLContext:
        context = _context(ssl.PROTOCOL_TLS_CLIENT, self.min_version, self.alpn_protocols)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            # With allowed names, the chain is verified in the handshake and
            # the names after it (wrap).
            context.check_hostname = not self.allowed_names
            if self.ca_file is not None:
                ca_file = self.ca_file
                _load("ca_file", lambda: context.load_verify_locations(cafile=ca_file), {"ca_file": ca_file})
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if self.cert_chain is not None and self.private_key is not None:
            chain, key = self.cert_chain, self.private_key
            files = {"cert_chain": chain, "private_key": key}
            _load("cert_chain", lambda: context.load_cert_chain(chain, key), files)
        self.generation += 1
        return context

    async def wrap(self, stream: ByteStream, host: str) -> TLSStream:
        """The handshake, as the client of ``host`` (raises :class:`ssl.SSLError`,
        an :class:`OSError`, on a certificate that does not verify)."""
        tls = await TLSConnection.wrap(
            stream,
            server_side=False,
            hostname=self.server_name or host,
            ssl_context=self.context,
            standard_compatible=False,
        )
        if self.verify and self.allowed_names:
            names = peer_names(tls.extra(TLSAttribute.peer_certificate, None))
            if not any(name in self.allowed_names for name in names):
                await anyio.aclose_forcefully(tls)
                shown = ", ".join(names) or "no names"
                raise ssl.SSLCertVerificationError(
                    1, f"[CERTIFICATE_VERIFY_FAILED] certificate of {host} names none of the allowed names ({shown})"
                )
        return tls


def connected_to_itself(stream: SocketStream) -> bool:
    """Whether ``stream`` is a TCP connection to itself.

    Connecting to a local port nobody listens on can pick that very port
    as its own source port: TCP's simultaneous open then connects the
    socket to itself, and what it sends comes back as the "answer" (a
    request to a dead endpoint would wait out its timeout instead of
    failing over, a health check would pass). Callers treat it as the
    refusal it stands for, as Go's ``net`` package does.
    """
    # A peer that reset the connection at once has no address left to read
    # (ENOTCONN): that is not this case, and what comes next tells.
    local: object = stream.extra(SocketAttribute.local_address, None)
    return local is not None and local == stream.extra(SocketAttribute.remote_address, None)


async def open_connection(host: str, port: int, tls: ClientTLS | None = None) -> ByteStream:
    """A TCP connection to ``host:port``, over TLS when ``tls`` is given.

    Every failure, the handshake's included, is an :class:`OSError`
    (a certificate that does not verify: :class:`ssl.SSLCertVerificationError`;
    a peer gone mid-handshake: :class:`ConnectionResetError`; a connection
    that reached itself: :class:`ConnectionRefusedError`), which is what
    callers already treat as "cannot connect".
    """
    stream = await anyio.connect_tcp(host, port)
    if connected_to_itself(stream):
        await anyio.aclose_forcefully(stream)
        raise ConnectionRefusedError(f"{host}:{port}: the connection reached itself (nothing listens there)")
    if tls is None:
        return stream
    try:
        return await tls.wrap(stream, host)
    except (anyio.BrokenResourceError, anyio.EndOfStream) as exc:
        await anyio.aclose_forcefully(stream)
        raise ConnectionResetError(f"TLS handshake with {host}:{port}: the peer closed the connection") from exc
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


class PrefixedStream(ByteStream):
    """A stream whose first ``receive()`` returns bytes read from it earlier
    (the byte that told TLS from plaintext), then the stream's own."""

    def __init__(self, stream: ByteStream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = prefix

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return await self.stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self.stream.send(item)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.stream.extra_attributes
