"""TLS settings of listeners (Envoy's DownstreamTlsContext) and clusters
(UpstreamTlsContext), as immutable values.

The files are named, not read, here: reading them is the run time's job
(:class:`~sota_dispatch.ServerTLS`, :class:`~sota_dispatch.ClientTLS`),
which reads them again when certificates rotate. ``--check-config`` builds
those too, so a missing or mismatched file is reported before serving.
"""

from __future__ import annotations

import attrs

import sota_dispatch.config.values as cv

from ..errors import ConfigError
from ..io.tls import TLS_VERSIONS, ClientTLS, ServerTLS

__all__ = ["ListenerTlsConfig", "TlsCertificateConfig", "UpstreamTlsConfig", "tls_version"]

#: Envoy's names of TLS versions (``tls_minimum_protocol_version``).
ENVOY_VERSIONS = {"TLSv1_2": "1.2", "TLSv1_3": "1.3"}


def tls_version(value: object, path: str) -> str:
    """``"1.2"`` or ``"1.3"`` (YAML's number 1.2 too, and Envoy's ``TLSv1_2``)."""
    text = ENVOY_VERSIONS.get(value, value) if isinstance(value, str) else value
    if isinstance(text, float):
        text = str(text)
    if text not in TLS_VERSIONS:
        raise ConfigError(path, f"expected a TLS version of at least 1.2 (1.2 or 1.3), got {cv.show(value)}")
    return str(text)


_FILE = cv.Rule(cv.string, kind="a file name")
_MAYBE_FILE = cv.Rule(cv.string, optional=True, kind="a file name")
_NAMES = cv.Rule(cv.items, parse=cv.Rule(cv.string).check)
_VERSION = cv.Rule(tls_version, kind="a TLS version")


@attrs.frozen
class TlsCertificateConfig:
    """A certificate chain and its private key (PEM files), and the server
    names (SNI) it is chosen for when a listener has several."""

    cert_chain: str = attrs.field(validator=_FILE)
    private_key: str = attrs.field(validator=_FILE)
    server_names: tuple[str, ...] = attrs.field(default=(), validator=_NAMES)


@attrs.frozen
class ListenerTlsConfig:
    """TLS termination on a listener; see :class:`~sota_dispatch.ServerTLS`."""

    certificates: tuple[TlsCertificateConfig, ...] = attrs.field(
        validator=cv.Rule(cv.items, parse=cv.instance(TlsCertificateConfig), non_empty=True)
    )
    #: CA bundle client certificates are checked against (mutual TLS).
    ca_file: str | None = attrs.field(default=None, validator=_MAYBE_FILE)
    require_client_certificate: bool = attrs.field(default=False, validator=cv.Rule(cv.boolean))
    #: A client certificate must name one of these (SAN or common name).
    allowed_names: tuple[str, ...] = attrs.field(default=(), validator=_NAMES)
    min_version: str = attrs.field(default="1.2", validator=_VERSION)
    alpn_protocols: tuple[str, ...] = attrs.field(default=(), validator=_NAMES)
    handshake_timeout: float = attrs.field(default=10.0, validator=cv.Rule(cv.duration, kind="seconds (a number)"))
    #: Serve clients whose first byte does not start a TLS record in plaintext.
    allow_plaintext: bool = attrs.field(default=False, validator=cv.Rule(cv.boolean))

    def __attrs_post_init__(self) -> None:
        if self.ca_file is None and (self.require_client_certificate or self.allowed_names):
            raise ConfigError("ca_file", "required to check client certificates")
        if len(self.certificates) > 1 and not all(c.server_names for c in self.certificates[1:]):
            raise ConfigError("certificates", "with several certificates, each after the first needs server_names")

    def server_tls(self) -> ServerTLS:
        """The run-time TLS (reads the files; a problem is a ConfigError named within ``tls``)."""
        return ServerTLS(
            [(c.cert_chain, c.private_key, c.server_names) for c in self.certificates],
            ca_file=self.ca_file,
            require_client_certificate=self.require_client_certificate,
            allowed_names=self.allowed_names,
            min_version=self.min_version,
            alpn_protocols=self.alpn_protocols,
            handshake_timeout=self.handshake_timeout,
            allow_plaintext=self.allow_plaintext,
        )


@attrs.frozen
class UpstreamTlsConfig:
    """TLS to a cluster's endpoints; see :class:`~sota_dispatch.ClientTLS`."""

    #: CA bundle the endpoints' certificates are checked against (none: the system's).
    ca_file: str | None = attrs.field(default=None, validator=_MAYBE_FILE)
    #: SNI, and the name the certificate must carry (none: the endpoint's host).
    server_name: str | None = attrs.field(default=None, validator=cv.Rule(cv.string, optional=True))
    cert_chain: str | None = attrs.field(default=None, validator=_MAYBE_FILE)
    private_key: str | None = attrs.field(default=None, validator=_MAYBE_FILE)
    #: False: accept any certificate (Envoy's upstream TLS without a validation context).
    verify: bool = attrs.field(default=True, validator=cv.Rule(cv.boolean))
    #: The certificate must name one of these instead (SAN or common name).
    allowed_names: tuple[str, ...] = attrs.field(default=(), validator=_NAMES)
    min_version: str = attrs.field(default="1.2", validator=_VERSION)
    alpn_protocols: tuple[str, ...] = attrs.field(default=(), validator=_NAMES)

    def __attrs_post_init__(self) -> None:
        if (self.cert_chain is None) != (self.private_key is None):
            raise ConfigError("private_key" if self.private_key is None else "cert_chain", "give both or neither")

    def client_tls(self) -> ClientTLS:
        """The run-time TLS (reads the files; see :meth:`ListenerTlsConfig.server_tls`)."""
        return ClientTLS(
            ca_file=self.ca_file,
            server_name=self.server_name,
            cert_chain=self.cert_chain,
            private_key=self.private_key,
            verify=self.verify,
            allowed_names=self.allowed_names,
            min_version=self.min_version,
            alpn_protocols=self.alpn_protocols,
        )
