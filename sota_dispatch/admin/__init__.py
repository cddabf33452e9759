"""The admin HTTP endpoint beside a proxy (Envoy's admin): metrics, clusters,
config dump, readiness, log level, drain.
"""

__all__: list[str] = []
