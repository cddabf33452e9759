"""The proxy's configuration: immutable, validated values (:mod:`.model`),
read from YAML in the native shape or from an Envoy v3 bootstrap
(:mod:`.envoy`). Every error names the path of the value.
"""

__all__: list[str] = []
