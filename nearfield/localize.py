"""Compatibility module: the chain lives in :mod:`nearfield.estimators.localize`."""

from __future__ import annotations

from .estimators.localize import Localization, localize

__all__ = ["Localization", "localize"]
