"""Actions named by module and function, imported when they run.

Task dicts hold ``(call, ("push", "push_image", ...))`` instead of the function itself,
so a release where nothing changed imports none of the action modules (and none of
esptool, oras-py or boto3 behind them): that is most of what a no-op costs above doit.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["call"]


def call(module: str, function: str, *args: Any) -> Any:
    """Run ``esp32tasks.<module>.<function>(*args)``."""
    return getattr(importlib.import_module(f"esp32tasks.{module}"), function)(*args)
