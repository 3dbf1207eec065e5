"""One exception family. Domain code raises only these; the one boundary in
:mod:`esp32tasks.tasks.boundary` turns them into one ``error:`` line and a non-zero exit."""

from __future__ import annotations

__all__ = [
    "BuildError",
    "CommandFailed",
    "ConfigError",
    "Esp32TasksError",
    "FirmwareError",
    "GitError",
    "PublishError",
    "RegistryAuthError",
    "RegistryError",
    "RegistryUnreachable",
    "ReleaseRefused",
    "SignError",
    "StaleReceipt",
    "StateError",
    "StoreAuthError",
    "StoreBucketMissing",
    "StoreError",
    "StoreReleaseConflict",
    "StoreUnreachable",
    "VerifyFailed",
]


class Esp32TasksError(Exception):
    """Base class: the message is complete, actionable and safe to print (no secrets)."""


class ConfigError(Esp32TasksError):
    """``targets.toml`` is malformed or inconsistent; the message names file, key and fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class GitError(Esp32TasksError):
    """The repository cannot tell us what we need (no git, no commit)."""


class StateError(Esp32TasksError):
    """doit's state file cannot be used: another run holds it, or it is not a state file."""


class StaleReceipt(Esp32TasksError):
    """A task's input receipt is missing or unreadable: its producer must run again."""


class CommandFailed(Esp32TasksError):
    """An external command could not be started or exited non-zero."""


class BuildError(Esp32TasksError):
    """A build ran but did not produce what its contract promises."""


class FirmwareError(Esp32TasksError):
    """An app image is corrupt or does not match its target."""


class SignError(Esp32TasksError):
    """A Secure Boot key cannot be read or does not sign: the message names the key and
    where it looked, never the key's bytes."""


class PublishError(Esp32TasksError):
    """Writing to the OCI layout, a registry or a store failed."""


class RegistryError(PublishError):
    """An OCI registry refused or failed a request (after bounded retries for 5xx)."""


class RegistryUnreachable(RegistryError):
    """No answer from the registry: connection refused, TLS failure or timeout."""


class RegistryAuthError(RegistryError):
    """The registry rejected our credentials (or we have none and it wants some)."""


class ReleaseRefused(PublishError):
    """A push that would break release safety: a dirty tree, or moving a released tag."""


class VerifyFailed(PublishError):
    """What the registry serves differs from the local receipts (a per-target report)."""


class StoreError(PublishError):
    """The artifact store (S3 or a directory) failed; the message names endpoint and bucket."""


class StoreUnreachable(StoreError):
    """The S3 endpoint refused the connection or did not answer in time."""


class StoreAuthError(StoreError):
    """The S3 server refused the credentials (never part of the message)."""


class StoreBucketMissing(StoreError):
    """The bucket in ``store.url`` does not exist (``create_bucket = true`` creates it)."""


class StoreReleaseConflict(StoreError):
    """This version was already released from another git revision: released is immutable."""
