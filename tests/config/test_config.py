"""The proxy configuration: validation errors name their path; the CLI exits 2.

The protocols a config names are the core's test protocols (echo_lines,
idproto), registered in this process, and two of this module's own; the
example configs, which name the plugins', are checked in test_examples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from sota_dispatch import (
    ConfigError,
    Dispatcher,
    Option,
    OptionPlace,
    OptionSchema,
    register_protocol,
    unregister_protocol,
)
from sota_dispatch.config import config_from_upstreams, parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.serve import main
from sota_dispatch.testing import EchoLines

# ``main`` sets up logging as the CLI does (see the fixture).
pytestmark = pytest.mark.usefixtures("root_logging_restored")


class LocalOnly(Dispatcher):
    """A local service only: without codecs the proxy cannot forward it."""

    async def serve(self) -> None:
        await self.reader.read_some()


class Account(EchoLines):
    """echo_lines whose upstream connections log in with an account."""

    options: ClassVar[OptionSchema] = EchoLines.options | OptionSchema(
        user=Option("the account's name (with password)", places=frozenset({"cluster"})),
        password=Option("the account's password", places=frozenset({"cluster"})),
    )

    @classmethod
    def check_options(cls, values: Mapping[str, Any], place: OptionPlace) -> dict[str, str]:
        if (values.get("user") is None) != (values.get("password") is None):
            return {"user" if values.get("user") is None else "password": "user and password go together"}
        return {}


@pytest.fixture
def protocols(echo_lines: str, idproto: str) -> Iterator[None]:
    """echo_lines and idproto, and this module's local_only and account,
    registered for the test."""
    register_protocol("local_only", LocalOnly)
    register_protocol("account", Account)
    yield
    unregister_protocol("local_only")
    unregister_protocol("account")


def minimal(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "listeners": [
            {"name": "l", "address": "127.0.0.1:7000", "protocol": "echo_lines", "routes": [{"cluster": "c"}]}
        ],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:7001"]}],
    }
    document.update(changes)
    return document


def with_cluster(**fields: Any) -> dict[str, Any]:
    return minimal(clusters=[{"name": "c", "endpoints": ["127.0.0.1:7001"], **fields}])


def with_route(**fields: Any) -> dict[str, Any]:
    return minimal(
        listeners=[
            {
                "name": "l",
                "address": "127.0.0.1:7000",
                "protocol": "echo_lines",
                "routes": [{"cluster": "c", **fields}],
            }
        ]
    )


def with_listener(**fields: Any) -> dict[str, Any]:
    document = minimal()
    document["listeners"][0].update(fields)
    return document


BAD: list[tuple[Any, str]] = [
    (with_listener(access_log="{nope}"), "listeners[0].access_log: unknown field {nope} (fields: start_time"),
    (with_listener(limits={"idle_timeout": "soon"}), "listeners[0].limits.idle_timeout: expected a positive duration"),
    (with_listener(limits={"max_connections": 0}), "listeners[0].limits.max_connections: expected an integer >= 1"),
    (
        minimal(clusters=[{"name": "a", "endpoints": ["127.0.0.1:1"]}, {"name": "c", "endpoints": ["localhost"]}]),
        'clusters[1].endpoints[0]: expected HOST:PORT, got "localhost"',
    ),
    (
        minimal(clusters=[{"name": "c", "endpoints": [{"address": "localhost"}]}]),
        'clusters[0].endpoints[0].address: expected HOST:PORT, got "localhost"',
    ),
    (
        minimal(extra=1),
        "extra: unknown key (expected one of: listeners, clusters, drain_timeout, admin, overload, xds)",
    ),
    (
        minimal(overload={"buffer_budget": "lots"}),
        'overload.buffer_budget: expected a size (bytes, or e.g. "128MiB"), got "lots"',
    ),
    (minimal(overload={"large_frame": 0}), "overload.large_frame: expected an integer >= 1, got 0"),
    ([], "the configuration must be a mapping (listeners, clusters), got a list"),
    (None, "the configuration must be a mapping (listeners, clusters), got null"),
    (
        minimal(clusters=[{"name": "c", "endpoints": ["127.0.0.1:0"]}]),
        'clusters[0].endpoints[0]: an endpoint needs a port from 1 to 65535, got "127.0.0.1:0"',
    ),
    (
        minimal(clusters=[{"name": "c", "endpoints": [{"address": 8080}]}]),
        "clusters[0].endpoints[0].address: expected HOST:PORT, got 8080 (YAML read an unquoted value",
    ),
    (
        minimal(clusters=[{"name": "c", "endpoints": [{"address": "127.0.0.1:1", "weight": 10**6}]}]),
        "clusters[0].endpoints[0].weight: expected an integer <= 1000, got 1000000",
    ),
    (with_cluster(pool={"max_pending": 0}), "clusters[0].pool.max_pending: expected an integer >= 1, got 0"),
    (with_cluster(connect_timeout=10**400), "clusters[0].connect_timeout: expected a positive duration"),
    (
        with_route(match=[{"attribute": "a", "regex": "a{99999999999}"}]),
        "listeners[0].routes[0].match[0].regex: invalid regular expression",
    ),
    (
        minimal(
            listeners=[
                {"name": n, "address": "127.0.0.1:7000", "protocol": "echo_lines", "routes": [{"cluster": "c"}]}
                for n in "ab"
            ]
        ),
        "listeners[1].address: 127.0.0.1:7000 is also listeners[0]'s",
    ),
    (minimal(**{"x\nerror: forged": 1}), '"x\\nerror: forged": unknown key'),
    (minimal(listeners=[]), "listeners: expected at least one entry"),
    (
        with_cluster(lb="fastest"),
        "clusters[0].lb: expected one of round_robin, random, least_request, ring_hash, maglev, modulo_hash, "
        'lowest_latency, got "fastest"',
    ),
    (
        with_cluster(connect_timeout="soon"),
        'clusters[0].connect_timeout: expected a positive duration (seconds, or e.g. "250ms"), got "soon"',
    ),
    (with_cluster(connect_timeout=-1), "clusters[0].connect_timeout: expected a positive duration"),
    (with_cluster(connect_timeout=float("nan")), "clusters[0].connect_timeout: expected a positive duration"),
    (
        with_cluster(pool={"mode": "shared"}),
        'clusters[0].pool.mode: expected one of multiplex, pipeline, exclusive, got "shared"',
    ),
    (with_cluster(pool={"connections": 0}), "clusters[0].pool.connections: expected an integer >= 1, got 0"),
    (with_cluster(pool={"connections": True}), "clusters[0].pool.connections: expected an integer, got true"),
    (with_cluster(pool={"shared": "yes"}), 'clusters[0].pool.shared: expected true or false, got "yes"'),
    (
        minimal(clusters=[{"name": "c", "endpoints": [{"address": "127.0.0.1:1", "weight": 0}]}]),
        "clusters[0].endpoints[0].weight: expected an integer >= 1, got 0",
    ),
    (
        with_cluster(lb="ring_hash"),
        'listeners[0].routes[0].hash_key: cluster "c" balances by ring_hash, which needs a hash_key',
    ),
    (with_route(cluster="nope"), 'listeners[0].routes[0].cluster: unknown cluster "nope" (clusters: c)'),
    (
        with_route(match=[{"attribute": "a"}]),
        "listeners[0].routes[0].match[0]: expected exactly one of exact, prefix, regex, present, got 0",
    ),
    (
        with_route(match=[{"attribute": "a", "exact": "x", "prefix": "y"}]),
        "listeners[0].routes[0].match[0]: expected exactly one of exact, prefix, regex, present, got 2",
    ),
    (
        with_route(match=[{"attribute": "a", "regex": "("}]),
        "listeners[0].routes[0].match[0].regex: invalid regular expression",
    ),
    (
        with_route(retry={"retry_on": ["5xx"]}),
        "listeners[0].routes[0].retry.retry_on[0]: expected one of connect_failure, reset, per_try_timeout, "
        'status, got "5xx"',
    ),
    (
        with_route(retry={"statuses": [4]}),
        'listeners[0].routes[0].retry.statuses: statuses are retried only with "status" in retry_on',
    ),
    (
        with_route(retry={True: ["reset"]}),
        "listeners[0].routes[0].retry: unknown key true (YAML reads unquoted on/off/yes/no as booleans: quote",
    ),
    (minimal(clusters=[{"name": "c", "endpoints": []}]), "clusters[0].endpoints: expected at least one entry"),
    (
        minimal(clusters=[{"name": "c", "endpoints": ["127.0.0.1:1"]}, {"name": "c", "endpoints": ["127.0.0.1:2"]}]),
        'clusters[1].name: duplicate cluster name "c"',
    ),
    (
        minimal(admin={"address": "10.0.0.1:9901"}),
        "admin.address: 10.0.0.1:9901 is not loopback; set allow_remote: true (--admin-allow-remote) to expose "
        "the admin",
    ),
    (minimal(admin={"port": 9901}), "admin.port: unknown key (expected one of: address, allow_remote)"),
]


@pytest.mark.parametrize(("document", "message"), BAD)
def test_every_error_names_its_path(document: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert str(caught.value).startswith(message), str(caught.value)


def test_durations_accept_units() -> None:
    config = parse_config(with_route(timeout="250ms", per_try_timeout="1.5s"))
    route = config.listeners[0].routes[0]
    assert (route.timeout, route.per_try_timeout) == (0.25, 1.5)
    assert parse_config(with_route(timeout="2m")).listeners[0].routes[0].timeout == 120


@pytest.mark.usefixtures("protocols")
def test_protocols_are_checked_against_the_installed_plugins() -> None:
    bad = minimal()
    bad["listeners"][0]["protocol"] = "nosuch"
    with pytest.raises(ConfigError, match=r"^listeners\[0\]\.protocol: unknown protocol 'nosuch'"):
        Proxy(parse_config(bad))
    bad["listeners"][0]["protocol"] = "local_only"
    with pytest.raises(ConfigError, match=r"^listeners\[0\]\.protocol: protocol 'local_only' cannot be proxied"):
        Proxy(parse_config(bad))
    bad["listeners"][0]["protocol"] = "echo_lines"
    bad["listeners"][0]["options"] = {"max_line": "abc"}
    with pytest.raises(
        ConfigError, match=r"^listeners\[0\]\.options\.max_line: expected a positive integer, got 'abc'"
    ):
        Proxy(parse_config(bad))
    bad["listeners"][0]["options"] = {"max_lines": "1"}
    with pytest.raises(ConfigError, match=r"^listeners\[0\]\.options\.max_lines: unknown option \(options: max_line\)"):
        Proxy(parse_config(bad))


@pytest.mark.parametrize(
    ("protocol", "cluster", "message"),
    [
        (
            "echo_lines",
            {"pool": {"mode": "multiplex"}},
            "clusters[0].pool.mode: echo_lines (listener l) cannot use multiplex pools; it can use exclusive, pipeline",
        ),
        (
            "idproto",
            {"pool": {"mode": "pipeline"}},
            "clusters[0].pool.mode: idproto (listener l) cannot use pipeline pools",
        ),
        (
            "account",
            {"options": {"usr": "bob"}},
            "clusters[0].options.usr: unknown option (options: user, password)",
        ),
        (
            "account",
            {"options": {"user": "bob"}},
            "clusters[0].options.password: user and password go together",
        ),
        ("echo_lines", {"options": {"foo": "bar"}}, "clusters[0].options.foo: unknown option (options: none)"),
        ("auto", {"pool": {"mode": "pipeline"}}, "clusters[0].pool.mode: "),
    ],
)
@pytest.mark.usefixtures("protocols")
def test_clusters_must_suit_the_protocols_routed_to_them(protocol: str, cluster: dict[str, Any], message: str) -> None:
    document = with_cluster(**cluster)
    document["listeners"][0]["protocol"] = protocol
    with pytest.raises(ConfigError) as caught:
        Proxy(parse_config(document))
    assert str(caught.value).startswith(message), str(caught.value)


def test_upstream_shortcut_is_one_round_robin_cluster_and_a_catch_all_route() -> None:
    config = config_from_upstreams("idproto", "127.0.0.1:12200", ["127.0.0.1:1", "127.0.0.1:2"])
    [listener] = config.listeners
    [cluster] = config.clusters
    assert (listener.protocol, listener.address, listener.routes[0].match) == ("idproto", "127.0.0.1:12200", ())
    assert (cluster.lb, [e.address for e in cluster.endpoints]) == ("round_robin", ["127.0.0.1:1", "127.0.0.1:2"])


def cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.usefixtures("protocols")
def test_cli_reports_config_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(minimal(clusters=[{"name": "c", "endpoints": ["localhost"]}])))
    assert cli_error(["--config", str(path), "--check-config"], capsys) == (
        'error: clusters[0].endpoints[0]: expected HOST:PORT, got "localhost"\n'
    )
    path.write_text("listeners: [\n")
    assert "invalid YAML at line 2" in cli_error(["--config", str(path)], capsys)
    path.write_text("listeners: []\nclusters: []\nlisteners: []\n")
    assert 'invalid YAML at line 3, column 1: duplicate key "listeners"' in cli_error(["--config", str(path)], capsys)
    path.write_bytes(b"listeners: \xff\n")
    assert "not UTF-8 (byte 0xff at offset 11)" in cli_error(["--config", str(path)], capsys)
    path.write_text("drain_timeout: " + "[" * 2000 + "]" * 2000 + "\n")
    assert "nested too deeply" in cli_error(["--config", str(path)], capsys)
    assert "cannot read config file" in cli_error(["--config", str(tmp_path / "missing.yaml")], capsys)
    assert "drop --upstream" in cli_error(["--config", str(path), "--upstream", "127.0.0.1:1"], capsys)
    assert "--upstream needs --protocol" in cli_error(["--upstream", "127.0.0.1:1"], capsys)
    assert "--check-config needs --config or --upstream" in cli_error(["--check-config"], capsys)
    assert cli_error(["--protocol", "local_only", "--upstream", "127.0.0.1:1", "--check-config"], capsys).startswith(
        "error: --protocol: protocol 'local_only' cannot be proxied"
    )
    assert cli_error(["--protocol", "idproto", "--upstream", "127.0.0.1:0", "--check-config"], capsys).startswith(
        "error: --upstream[0]: an endpoint needs a port from 1 to 65535"
    )
    assert "--check-config needs --config or --upstream" not in cli_error(["--config", ""], capsys)


def test_cli_reports_a_busy_port_as_a_config_error(echo_lines: str, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = cli_error(
            ["--protocol", echo_lines, "--upstream", "127.0.0.1:1", "--listen", f"127.0.0.1:{port}"], capsys
        )
    assert err.startswith(f"error: --listen: cannot listen on 127.0.0.1:{port}: ")


def test_pools_are_per_client_by_default_unless_ids_keep_answers_apart() -> None:
    from sota_dispatch.config import PoolConfig

    assert PoolConfig().resolved("multiplex") == ("multiplex", 1, 10_000, True)
    assert PoolConfig().resolved("pipeline") == ("pipeline", 1, 1_000, False)
    assert PoolConfig().resolved("exclusive") == ("exclusive", 1, 1, False)
    assert PoolConfig(shared=True).resolved("pipeline") == ("pipeline", 2, 1_000, True)
    assert PoolConfig(shared=True).resolved("exclusive") == ("exclusive", 64, 1, True)
    assert PoolConfig(shared=False, connections=3).resolved("multiplex") == ("multiplex", 3, 10_000, False)
    assert parse_config(with_cluster(pool={"shared": True})).clusters[0].pool.shared is True


def test_overload_sizes_take_units() -> None:
    config = parse_config(minimal(overload={"buffer_budget": "64MiB", "large_frame": "512 KiB"}))
    assert (config.overload.buffer_budget, config.overload.large_frame) == (64 * 1024**2, 512 * 1024)
    assert parse_config(minimal(overload={"buffer_budget": 1000})).overload.buffer_budget == 1000
