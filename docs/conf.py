"""Sphinx configuration for the sota-dispatch documentation."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)] + [str(ROOT / "protocols" / name) for name in ("simple_line", "zmtp", "xprotocol")]

project = "sota-dispatch"
author = "the sota-dispatch developers"
copyright = "2026, the sota-dispatch developers"
release = "0.1.1"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
html_theme = "alabaster"
exclude_patterns = ["_build"]
