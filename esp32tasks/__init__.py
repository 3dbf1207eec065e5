"""esp32tasks: doit tasks that build ESP32 firmware per target and release it.

A firmware repository's ``dodo.py`` is one import (see README.md)::

    from esp32tasks.tasks import *  # noqa: F403
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
