"""A protocol's verdict on the first bytes of a connection, for auto-detection."""

from __future__ import annotations

import enum

__all__ = ["Match"]


class Match(enum.Enum):
    """A protocol's verdict on the first bytes of a connection."""

    YES = "yes"
    NO = "no"
    NEED_MORE = "need-more"
