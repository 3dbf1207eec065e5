"""doit tasks for this repository: `doit release` builds and releases the example.

Every task comes from esp32tasks, configured by targets.toml; `doit list` shows them.
"""

from esp32tasks.tasks import *  # noqa: F403
