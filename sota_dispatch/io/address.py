"""``HOST:PORT`` strings, parsed strictly so a typo is an error, not a surprise."""

from __future__ import annotations

__all__ = ["format_address", "is_loopback", "parse_address"]


def parse_address(text: str | tuple[str, int], *, default_host: str | None = None) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (IPv6 as ``[::1]:PORT``) into ``(host, port)``.

    ZeroMQ's endpoint form is accepted too, because pyzmq users type it:
    ``tcp://HOST:PORT``, and ``tcp://*:PORT`` for every interface
    (``0.0.0.0``). Other transports (``ipc://``, ``inproc://``) are an error.
    Raises :class:`ValueError` with a message quoting the input. Port 0 is
    allowed: it asks the system for a free port when binding.
    """
    if isinstance(text, tuple):
        host, port = text
        return _check(str(host), int(port), repr(text))
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    if sep:
        if scheme.lower() != "tcp":
            raise ValueError(f'only tcp:// addresses can be served or reached here, got "{text}"')
        raw = rest
        if raw.startswith("*:"):
            raw = "0.0.0.0" + raw[1:]
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0 or raw[end + 1 : end + 2] != ":":
            raise ValueError(f'expected [IPV6]:PORT, got "{text}"')
        host, port_text = raw[1:end], raw[end + 2 :]
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f'expected HOST:PORT, got "{text}"')
    if not host:
        if default_host is None:
            raise ValueError(f'expected HOST:PORT, got "{text}" (no host)')
        host = default_host
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f'expected HOST:PORT with a numeric port, got "{text}"')
    return _check(host, int(port_text), f'"{text}"')


def _check(host: str, port: int, shown: str) -> tuple[str, int]:
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be within 0..65535, got {shown}")
    if not host:
        raise ValueError(f"empty host in {shown}")
    return host, port


def format_address(address: str | tuple[str, int] | tuple[str, int, int, int]) -> str:
    """Render a socket address as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6).

    A string (a UNIX socket path) is returned as it is.
    """
    if isinstance(address, str):
        return address
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) is this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
