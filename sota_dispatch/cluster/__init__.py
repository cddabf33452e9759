"""Where requests go: clusters, their endpoints' pools and upstream
connections, load balancers, breakers, outlier ejection and health checks.

Builds on the protocol and config layers; the request path that feeds it
is the proxy layer above.
"""

__all__: list[str] = []
