"""The Envoy import's TLS transport sockets: Downstream/UpstreamTlsContext
read as the native ``tls`` settings, mistakes named by their Envoy path, and
a proxy made from such a file serving TLS on both sides."""

from __future__ import annotations

import copy
from typing import Any

import anyio
import pytest
from anyio.streams.tls import TLSAttribute

from sota_dispatch import ConfigError, ServerTLS
from sota_dispatch.config import ListenerTlsConfig, TlsCertificateConfig, UpstreamTlsConfig
from sota_dispatch.config.envoy import from_envoy
from sota_dispatch.testing import EchoLines, running_proxy, serving

pytestmark = pytest.mark.anyio

TLS = "envoy.transport_sockets.tls"
DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def address(text: str) -> dict[str, Any]:
    host, port = text.rsplit(":", 1)
    return {"socket_address": {"address": host, "port_value": int(port)}}


def bootstrap(backend: str, downstream: Any = None, upstream: Any = None) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "filters": [
            {
                "name": "envoy.filters.network.generic_proxy",
                "typed_config": {
                    "codec_config": {"name": "echo_lines"},
                    "route_config": {
                        "virtual_hosts": [{"routes": [{"match": {"prefix": ""}, "route": {"cluster": "echo"}}]}]
                    },
                },
            }
        ]
    }
    cluster: dict[str, Any] = {
        "name": "echo",
        "load_assignment": {"endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(backend)}}]}]},
    }
    if downstream is not None:
        chain["transport_socket"] = {"name": TLS, "typed_config": downstream}
    if upstream is not None:
        cluster["transport_socket"] = {"name": TLS, "typed_config": upstream}
    listener = {"name": "front", "address": address("127.0.0.1:0"), "filter_chains": [chain]}
    return {"static_resources": {"listeners": [listener], "clusters": [cluster]}}


def contexts(files: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    downstream = {
        "@type": DOWNSTREAM,
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [
                {"certificate_chain": {"filename": files.cert_chain}, "private_key": {"filename": files.private_key}}
            ],
            "validation_context": {
                "trusted_ca": {"filename": files.ca_file},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "client.example"}}],
            },
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_3"},
            "alpn_protocols": ["sota"],
        },
    }
    upstream = {
        "@type": UPSTREAM,
        "sni": "localhost",
        "common_tls_context": {
            "tls_certificates": [
                {"certificate_chain": {"filename": files.client_chain}, "private_key": {"filename": files.client_key}}
            ],
            "validation_context": {"trusted_ca": {"filename": files.ca_file}},
        },
    }
    return downstream, upstream


def test_tls_contexts_are_the_native_tls_settings(tls_files: Any) -> None:
    downstream, upstream = contexts(tls_files)
    config = from_envoy(bootstrap("127.0.0.1:1", downstream, upstream))
    assert config.listeners[0].tls == ListenerTlsConfig(
        certificates=(TlsCertificateConfig(tls_files.cert_chain, tls_files.private_key),),
        ca_file=tls_files.ca_file,
        require_client_certificate=True,
        allowed_names=("client.example",),
        min_version="1.3",
        alpn_protocols=("sota",),
    )
    assert config.clusters[0].tls == UpstreamTlsConfig(
        ca_file=tls_files.ca_file,
        server_name="localhost",
        cert_chain=tls_files.client_chain,
        private_key=tls_files.client_key,
    )
    # Envoy's default: an upstream context without a validation context verifies nothing.
    bare = from_envoy(bootstrap("127.0.0.1:1", upstream={"@type": UPSTREAM}))
    assert bare.clusters[0].tls == UpstreamTlsConfig(verify=False)
    assert bare.listeners[0].tls is None


SOCKET = "static_resources.listeners[0].filter_chains[0].transport_socket"
COMMON = f"{SOCKET}.typed_config.common_tls_context"


def mutate(files: Any, change: str) -> dict[str, Any]:
    downstream, upstream = copy.deepcopy(contexts(files))
    common = downstream["common_tls_context"]
    if change == "two certificates":
        common["tls_certificates"] *= 2
    elif change == "TLSv1_1":
        common["tls_params"]["tls_minimum_protocol_version"] = "TLSv1_1"
    elif change == "inline key":
        common["tls_certificates"][0]["private_key"] = {"inline_string": "-----BEGIN..."}
    elif change == "prefix matcher":
        common["validation_context"]["match_typed_subject_alt_names"][0]["matcher"] = {"prefix": "client"}
    elif change == "wrong type":
        downstream["@type"] = UPSTREAM
    elif change == "session tickets":
        downstream["session_ticket_keys"] = {}
    return bootstrap("127.0.0.1:1", downstream, upstream)


@pytest.mark.parametrize(
    ("change", "path", "problem"),
    [
        ("two certificates", f"{COMMON}.tls_certificates", "exactly one certificate is supported here"),
        ("TLSv1_1", f"{COMMON}.tls_params.tls_minimum_protocol_version", "expected TLSv1_2 or TLSv1_3"),
        ("inline key", f"{COMMON}.tls_certificates[0].private_key.inline_string", "not supported"),
        (
            "prefix matcher",
            f"{COMMON}.validation_context.match_typed_subject_alt_names[0].matcher.prefix",
            "not supported",
        ),
        ("wrong type", f"{SOCKET}.typed_config.@type", "expected type.googleapis.com/"),
        ("session tickets", f"{SOCKET}.typed_config.session_ticket_keys", "not supported"),
    ],
)
def test_what_the_subset_lacks_is_an_error_naming_its_envoy_path(
    tls_files: Any, change: str, path: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        from_envoy(mutate(tls_files, change))
    [error] = caught.value.errors
    assert error.path == path
    assert problem in error.problem


@pytest.mark.usefixtures("echo_lines")
async def test_a_proxy_from_an_envoy_file_serves_mutual_tls_both_ways(tls_files: Any) -> None:
    downstream, upstream = contexts(tls_files)
    backend_tls = ServerTLS(
        [(tls_files.cert_chain, tls_files.private_key, ())],
        ca_file=tls_files.ca_file,
        require_client_certificate=True,
        allowed_names=["client.example"],
    )
    async with serving(EchoLines, tls=backend_tls) as backend:
        assert backend.address is not None
        async with running_proxy(from_envoy(bootstrap(backend.address, downstream, upstream))) as proxy:
            host, port = proxy.addresses["front"].rsplit(":", 1)
            context = tls_files.client_context(certificate=(tls_files.client_chain, tls_files.client_key))
            context.set_alpn_protocols(["sota"])
            with anyio.fail_after(10):
                stream = await anyio.connect_tcp(
                    host, int(port), tls=True, ssl_context=context, tls_hostname="localhost"
                )
                async with stream:
                    assert stream.extra(TLSAttribute.alpn_protocol) == "sota"
                    await stream.send(b"echo:both ways\n")
                    data = b""
                    while not data.endswith(b"\n"):
                        data += await stream.receive()
    assert data == b"echo:both ways\n"
