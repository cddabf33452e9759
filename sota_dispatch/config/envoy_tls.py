"""Envoy's TLS transport sockets (a subset) as native ``tls`` settings.

``transport_socket`` named ``envoy.transport_sockets.tls`` on a listener's
filter chain (``DownstreamTlsContext``) or on a cluster
(``UpstreamTlsContext``), with ``common_tls_context``:

* ``tls_certificates[]``: ``certificate_chain.filename`` and
  ``private_key.filename`` (one on a listener: Envoy picks among several by
  the names inside them, which the native config names explicitly with
  ``server_names``; one on a cluster, its client certificate);
* ``validation_context``: ``trusted_ca.filename`` and
  ``match_typed_subject_alt_names[].matcher.exact`` (or the older
  ``match_subject_alt_names[].exact``): the names a peer certificate must
  carry (``allowed_names``);
* ``tls_params.tls_minimum_protocol_version`` (``TLSv1_2``, ``TLSv1_3``;
  ``TLS_AUTO`` is 1.2) and ``alpn_protocols``;

plus ``require_client_certificate`` (downstream) and ``sni`` (upstream).
Envoy's defaults are kept: an upstream context without a validation
context accepts any certificate (``verify: false``). One difference, on the
safe side: with a validation context but no names to match, Envoy checks
only the chain, while sota-dispatch also checks that the certificate names
``sni`` (or the endpoint's host). Anything else is an error naming its
field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["ENVOY_TLS_SOCKET", "downstream_tls", "upstream_tls"]

#: The transport socket that carries TLS in an Envoy file.
ENVOY_TLS_SOCKET = "envoy.transport_sockets.tls"

_DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_VERSIONS = {"TLS_AUTO": "1.2", "TLSv1_2": "1.2", "TLSv1_3": "1.3"}

#: ``(value, path, allowed keys, required keys) -> the mapping``: envoy.py's checker.
Checker = Callable[[object, str, Sequence[str], Sequence[str]], Mapping[str, Any]]


def _file(check: Checker, value: object, path: str) -> str:
    source = check(value, path, ("filename",), ("filename",))
    return str(source["filename"])


def _context(check: Checker, value: object, path: str, context_type: str, extra: Sequence[str]) -> Mapping[str, Any]:
    """The ``typed_config`` of a TLS transport socket, its type checked."""
    socket = check(value, path, ("name", "typed_config"), ("name", "typed_config"))
    if socket["name"] != ENVOY_TLS_SOCKET:
        raise ConfigError(f"{path}.name", f"only {ENVOY_TLS_SOCKET} is supported, got {socket['name']!r}")
    typed = check(socket["typed_config"], f"{path}.typed_config", ("@type", "common_tls_context", *extra), ())
    if typed.get("@type", context_type) != context_type:
        raise ConfigError(f"{path}.typed_config.@type", f"expected {context_type}, got {typed['@type']!r}")
    return typed


def _common(check: Checker, value: object, path: str, *, certificates: str) -> dict[str, Any]:
    """The native fields ``common_tls_context`` gives; ``certificates``:
    "one" (a listener's) or "optional" (a cluster's client certificate)."""
    common = check(value, path, ("tls_certificates", "validation_context", "tls_params", "alpn_protocols"), ())
    native: dict[str, Any] = {}
    chains = common.get("tls_certificates", [])
    if not isinstance(chains, list) or len(chains) > 1 or (certificates == "one" and not chains):
        raise ConfigError(f"{path}.tls_certificates", "exactly one certificate is supported here")
    for chain in chains:
        cpath = f"{path}.tls_certificates[0]"
        entry = check(chain, cpath, ("certificate_chain", "private_key"), ("certificate_chain", "private_key"))
        native["cert_chain"] = _file(check, entry["certificate_chain"], f"{cpath}.certificate_chain")
        native["private_key"] = _file(check, entry["private_key"], f"{cpath}.private_key")
    if "validation_context" in common:
        vpath = f"{path}.validation_context"
        validation = check(
            common["validation_context"],
            vpath,
            ("trusted_ca", "match_typed_subject_alt_names", "match_subject_alt_names"),
            ("trusted_ca",),
        )
        native["ca_file"] = _file(check, validation["trusted_ca"], f"{vpath}.trusted_ca")
        names = []
        for i, item in enumerate(validation.get("match_typed_subject_alt_names", [])):
            ipath = f"{vpath}.match_typed_subject_alt_names[{i}]"
            typed = check(item, ipath, ("san_type", "matcher"), ("matcher",))
            names.append(check(typed["matcher"], f"{ipath}.matcher", ("exact",), ("exact",))["exact"])
        for i, item in enumerate(validation.get("match_subject_alt_names", [])):
            names.append(check(item, f"{vpath}.match_subject_alt_names[{i}]", ("exact",), ("exact",))["exact"])
        if names:
            native["allowed_names"] = names
    if "tls_params" in common:
        params = check(common["tls_params"], f"{path}.tls_params", ("tls_minimum_protocol_version",), ())
        if "tls_minimum_protocol_version" in params:
            version = params["tls_minimum_protocol_version"]
            if version not in _VERSIONS:
                raise ConfigError(
                    f"{path}.tls_params.tls_minimum_protocol_version",
                    f"expected TLSv1_2 or TLSv1_3 (sota-dispatch never speaks less than TLS 1.2), got {version!r}",
                )
            native["min_version"] = _VERSIONS[version]
    if "alpn_protocols" in common:
        native["alpn_protocols"] = common["alpn_protocols"]
    return native


def downstream_tls(check: Checker, value: object, path: str) -> dict[str, Any]:
    """A listener's native ``tls`` from its filter chain's ``transport_socket``."""
    typed = _context(check, value, path, _DOWNSTREAM, ("require_client_certificate",))
    cpath = f"{path}.typed_config.common_tls_context"
    if "common_tls_context" not in typed:
        raise ConfigError(cpath, "required")
    common = _common(check, typed["common_tls_context"], cpath, certificates="one")
    native: dict[str, Any] = {
        "certificates": [{"cert_chain": common.pop("cert_chain"), "private_key": common.pop("private_key")}],
        **common,
    }
    if "require_client_certificate" in typed:
        native["require_client_certificate"] = typed["require_client_certificate"]
    return native


def upstream_tls(check: Checker, value: object, path: str) -> dict[str, Any]:
    """A cluster's native ``tls`` from its ``transport_socket``."""
    typed = _context(check, value, path, _UPSTREAM, ("sni",))
    cpath = f"{path}.typed_config.common_tls_context"
    native = _common(check, typed.get("common_tls_context", {}), cpath, certificates="optional")
    if "ca_file" not in native:
        native["verify"] = False  # Envoy's default: no validation context, no verification
    if "sni" in typed:
        native["server_name"] = typed["sni"]
    return native
