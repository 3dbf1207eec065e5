"""An OCI registry client for our images: what is there, and send only what is missing.

:func:`resolve` merges ``[registry]`` with the environment and the command line (cheap:
task generation calls it). :class:`Client` talks to the registry through oras-py (see
:mod:`esp32tasks.oras_transport` for the timeout, retry and auth policy); it is created
only inside actions, so a no-op release imports neither oras-py nor requests.
:meth:`Client.shared` hands every push task of one run the same client: one credential
lookup and one keep-alive connection for the whole release.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

from esp32tasks import dockercreds, oci
from esp32tasks.config import _REPOSITORY, RegistryConfig
from esp32tasks.errors import ConfigError, RegistryError

if TYPE_CHECKING:
    from esp32tasks.oras_transport import Transport

__all__ = ["ENV_ALLOW_DIRTY", "ENV_FORCE", "ENV_REGISTRY", "BlobsMissing", "Client", "resolve"]

ENV_REGISTRY: Final = "ESP32TASKS_REGISTRY"
ENV_INSECURE: Final = "ESP32TASKS_REGISTRY_INSECURE"
ENV_CA_BUNDLE: Final = "ESP32TASKS_REGISTRY_CA_BUNDLE"
ENV_ALLOW_DIRTY: Final = "ESP32TASKS_ALLOW_DIRTY"
ENV_FORCE: Final = "ESP32TASKS_FORCE"
ACCEPT: Final = f"{oci.INDEX_MEDIA_TYPE}, {oci.MANIFEST_MEDIA_TYPE}"
_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("", "0", "false", "no", "off")
#: What distribution (and registries built on it) answer to a manifest PUT whose blobs or
#: child manifests it does not have.
_BLOB_UNKNOWN: Final = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"})

T = TypeVar("T")
R = TypeVar("R")


class BlobsMissing(RegistryError):
    """A manifest PUT was refused because the registry lacks some of its blobs."""


def _flag(environ: Mapping[str, str], name: str) -> bool | None:
    value = environ.get(name)
    if value is None:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError([f"{name}={value!r}: expected 1 or 0 (true or false)"])


def resolve(config: RegistryConfig | None, environ: Mapping[str, str] | None = None,
            cli_repository: str | None = None) -> RegistryConfig | None:
    """``[registry]`` with overrides: ``registry=`` on the doit command line, then
    ``ESP32TASKS_REGISTRY``; ``ESP32TASKS_REGISTRY_INSECURE``, ``..._CA_BUNDLE``,
    ``ESP32TASKS_ALLOW_DIRTY`` and ``ESP32TASKS_FORCE`` override their keys.
    """
    env = os.environ if environ is None else environ
    repository = cli_repository or env.get(ENV_REGISTRY) or None
    if repository is not None:
        source = "registry=" if cli_repository else ENV_REGISTRY
        if not _REPOSITORY.fullmatch(repository):
            raise ConfigError([f"{source}{'' if cli_repository else '='}{repository}: not "
                               "host[:port]/path with a lower-case path (e.g. "
                               "harbor.example.com/cloud-iot/hello)"])
        config = (RegistryConfig(repository=repository) if config is None
                  else dataclasses.replace(config, repository=repository))
    if config is None:
        return None
    changes: dict[str, Any] = {}
    for name, key in ((ENV_INSECURE, "insecure"), (ENV_ALLOW_DIRTY, "allow_dirty"),
                      (ENV_FORCE, "force")):
        flag = _flag(env, name)
        if flag is not None:
            changes[key] = flag
    if env.get(ENV_CA_BUNDLE):
        changes["ca_bundle"] = env[ENV_CA_BUNDLE]
    return dataclasses.replace(config, **changes) if changes else config


class Client:
    """One repository in one registry. Every method is one or two requests, no more."""

    _shared: ClassVar[dict[tuple[RegistryConfig, Path, int], Client]] = {}
    _shared_lock: ClassVar = threading.Lock()

    @classmethod
    def shared(cls, config: RegistryConfig, root: Path,
               environ: Mapping[str, str] | None = None) -> Client:
        """The client of this thread for ``config``: the tasks of one doit run share its
        credentials and its keep-alive connections (``environ`` is read the first time).
        One per thread, so ``doit -n N -P thread`` never shares a requests session."""
        key = (config, root, threading.get_ident())
        with cls._shared_lock:
            client = cls._shared.get(key)
            if client is None:
                client = cls._shared[key] = cls(config, root, environ)
            return client

    def __init__(self, config: RegistryConfig, root: Path,
                 environ: Mapping[str, str] | None = None) -> None:
        from esp32tasks.oras_transport import Transport

        self.config = config
        self.credentials = dockercreds.lookup(config.host, environ)
        verify: bool | str = True
        if config.ca_bundle:
            bundle = Path(config.ca_bundle)
            bundle = bundle if bundle.is_absolute() else root / bundle
            if not bundle.is_file():
                raise ConfigError([f"[registry] ca_bundle: {bundle} does not exist; point it "
                                   "at the PEM file of the CA that signed the registry's "
                                   "certificate"])
            verify = str(bundle)
        self.transport: Transport = Transport(
            host=config.host, insecure=config.insecure, verify=verify,
            timeout=config.timeout,
            authorization=self.credentials.basic() if self.credentials else None,
            what_to_check=f"the registry in [registry] repository ({config.host})")
        self.base = f"{self.transport.prefix}://{config.host}/v2/{config.path}"

    @property
    def requests_sent(self) -> int:
        return int(self.transport.requests_sent)

    def _fail(self, what: str, response: Any,
              kind: type[RegistryError] = RegistryError) -> RegistryError:
        detail = "; ".join(f"{code}: {message}" for code, message in _errors(response)[:3])
        return kind(f"registry {self.config.host} refused {what}: "
                    f"{response.status_code} {response.reason}"
                    + (f" ({detail})" if detail else ""))

    def manifest_digest(self, reference: str) -> str | None:
        """The digest ``reference`` (tag or digest) resolves to, or None when it is absent."""
        response = self.transport.do_request(f"{self.base}/manifests/{reference}", "HEAD",
                                              headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(f"HEAD of manifest {reference}", response)
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            # a registry that does not say: fetch and hash the bytes (rare; one GET)
            return self.get_manifest(reference)[0]
        return str(digest)

    def get_manifest(self, reference: str) -> tuple[str, bytes]:
        """``(digest, bytes)`` of a manifest or index; raises when absent."""
        response = self.transport.do_request(f"{self.base}/manifests/{reference}", "GET",
                                              headers={"Accept": ACCEPT})
        if response.status_code != 200:
            raise self._fail(f"GET of manifest {reference}", response)
        data = bytes(response.content)
        digest = oci.Blob("", data).digest
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise RegistryError(f"registry {self.config.host} served manifest {reference} "
                                f"with digest {served}, but its bytes hash to {digest}")
        return digest, data

    def put_manifest(self, reference: str, blob: oci.Blob) -> None:
        """PUT the exact bytes (never re-serialised) with their media type.

        Raises :class:`BlobsMissing` when the registry lacks a blob the manifest names (or a
        child manifest of an index): distribution checks every one before it stores a
        manifest, so a PUT that succeeds proves they are all there.
        """
        response = self.transport.do_request(
            f"{self.base}/manifests/{reference}", "PUT", data=blob.data,
            headers={"Content-Type": blob.media_type})
        if response.status_code not in (200, 201):
            missing = response.status_code == 400 and any(
                code in _BLOB_UNKNOWN for code, _ in _errors(response))
            raise self._fail(f"PUT of manifest {reference}", response,
                             BlobsMissing if missing else RegistryError)
        served = response.headers.get("Docker-Content-Digest")
        if served and served != blob.digest:
            raise RegistryError(f"registry {self.config.host} stored {reference} as {served}, "
                                f"not {blob.digest}: it rewrote the manifest")

    def has_blob(self, digest: str) -> bool:
        """One HEAD: does the repository hold this blob?"""
        response = self.transport.do_request(f"{self.base}/blobs/{digest}", "HEAD")
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise self._fail(f"HEAD of blob {digest}", response)
        return True

    def upload_blob(self, path: Path, descriptor: Mapping[str, Any]) -> None:
        """POST + PUT (oras-py's ``put_upload``), without asking first whether it is there.

        The file is read once, here; the registry checks its digest as it commits the upload.
        """
        layer = {"digest": descriptor["digest"], "size": descriptor["size"],
                 "mediaType": descriptor["mediaType"]}
        container = self.transport.get_container(self.config.repository)
        try:
            response = self.transport.put_upload(str(path), container, layer)
        except ValueError:  # oras-py: the POST's answer had no upload location
            raise RegistryError(f"registry {self.config.host} did not start an upload for "
                                f"blob {descriptor['digest']} (no Location in its answer to "
                                f"POST /v2/{self.config.path}/blobs/uploads/)") from None
        if response.status_code not in (200, 201, 202):
            raise self._fail(f"upload of blob {descriptor['digest']}", response)

    def parallel(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``function`` over ``items`` on up to ``POOL_SIZE`` connections; results in order.

        The first item's error wins, so a failure reads the same however threads interleave.
        """
        from esp32tasks.oras_transport import POOL_SIZE

        todo = list(items)
        if len(todo) <= 1:
            return [function(item) for item in todo]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(POOL_SIZE, len(todo))) as pool:
            futures = [pool.submit(function, item) for item in todo]
        return [future.result() for future in futures]

    def get_blob(self, digest: str) -> bytes:
        response = self.transport.do_request(f"{self.base}/blobs/{digest}", "GET")
        if response.status_code != 200:
            raise self._fail(f"GET of blob {digest}", response)
        return bytes(response.content)


def _errors(response: Any) -> list[tuple[str, str]]:
    """``(code, message)`` of each error in a registry's JSON answer (none if not JSON)."""
    try:
        errors = response.json().get("errors") or []
        return [(str(e.get("code")), str(e.get("message"))) for e in errors]
    except (ValueError, AttributeError):
        return []
