"""xDS: clusters' endpoints from an Envoy control plane (ADS over gRPC; the ``xds`` extra)."""

from .ads import EDS_TYPE, AdsClient, EdsSource, check_xds
from .endpoints import endpoints_of

__all__ = ["EDS_TYPE", "AdsClient", "EdsSource", "check_xds", "endpoints_of"]
