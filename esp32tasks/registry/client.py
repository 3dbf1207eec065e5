"""An OCI registry client for our images: what is there, and send only what is missing.

:class:`Client` talks to one repository through oras-py (see :mod:`.http` for the
timeout, retry and auth policy). :func:`shared` hands every push task of one run the same
client: one credential lookup and one keep-alive connection for the whole release. It is
created only inside actions, so a no-op release imports neither oras-py nor requests.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from esp32tasks import oci
from esp32tasks.config import RegistryConfig
from esp32tasks.errors import ConfigError, RegistryError
from esp32tasks.registry import credentials
from esp32tasks.runcache import per_run

if TYPE_CHECKING:
    from esp32tasks.receipts import Descriptor
    from esp32tasks.registry.http import Transport

__all__ = ["BlobsMissing", "Client", "shared"]

ACCEPT: Final = f"{oci.INDEX_MEDIA_TYPE}, {oci.MANIFEST_MEDIA_TYPE}"
#: What distribution (and registries built on it) answer to a manifest PUT whose blobs or
#: child manifests it does not have.
_BLOB_UNKNOWN: Final = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"})

T = TypeVar("T")
R = TypeVar("R")


class BlobsMissing(RegistryError):
    """A manifest PUT was refused because the registry lacks some of its blobs."""


def shared(config: RegistryConfig, root: Path) -> Client:
    """The client of this thread for ``config`` in this run: the tasks of one doit run
    share its credentials and its keep-alive connections. One per thread, so
    ``doit -n N -P thread`` never shares a requests session."""
    return _client(config, root, threading.get_ident())


@per_run
def _client(config: RegistryConfig, root: Path, thread: int) -> Client:
    del thread  # part of the cache key only
    return Client(config, root)


class Client:
    """One repository in one registry. Every method is one or two requests, no more."""

    def __init__(self, config: RegistryConfig, root: Path, *, push: bool = True) -> None:
        from esp32tasks.registry.http import Transport

        self.config = config
        self.credentials = credentials.lookup(config.host, config.login, config.docker_config)
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
            credentials=self.credentials,
            scope=f"repository:{config.path}:{'pull,push' if push else 'pull'}",
            what_to_check=f"the registry in {config.source} ({config.host})")
        #: oras-py's parsed reference: it builds every URL of the repository
        self.container = self.transport.get_container(config.repository)
        #: bytes of blobs and manifests sent (and confirmed), for the release summary
        self.sent = 0
        self._sent_lock = threading.Lock()

    def _count(self, size: int) -> None:
        with self._sent_lock:
            self.sent += size

    def _manifest_url(self, reference: str) -> str:
        return f"{self.transport.prefix}://{self.container.manifest_url(reference)}"

    def _fail(self, what: str, response: Any,
              kind: type[RegistryError] = RegistryError) -> RegistryError:
        detail = "; ".join(f"{code}: {message}" for code, message in _errors(response)[:3])
        return kind(f"registry {self.config.host} refused {what}: "
                    f"{response.status_code} {response.reason}"
                    + (f" ({detail})" if detail else ""))

    def manifest_digest(self, reference: str) -> str | None:
        """The digest ``reference`` (tag or digest) resolves to, or None when it is absent."""
        response = self.transport.do_request(self._manifest_url(reference), "HEAD",
                                              headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(f"HEAD of manifest {reference}", response)
        digest = response.headers.get("Docker-Content-Digest", "")
        if not _DIGEST.fullmatch(digest):
            # a registry that does not say: fetch and hash the bytes (rare; one GET)
            return self.get_manifest(reference)[0]
        return digest

    def get_manifest(self, reference: str) -> tuple[str, bytes]:
        """``(digest, bytes)`` of a manifest or index; raises when absent, and when the
        answer is not an OCI manifest or index (an empty or other body is no verdict)."""
        response = self.transport.do_request(self._manifest_url(reference), "GET",
                                              headers={"Accept": ACCEPT})
        if response.status_code != 200:
            raise self._fail(f"GET of manifest {reference}", response)
        data = bytes(response.content)
        if not _is_manifest(data):
            kind = response.headers.get("Content-Type") or "no content type"
            raise self._not_registry(f"GET of manifest {reference}",
                                     f"{len(data)} bytes of {kind}, not an OCI manifest")
        digest = oci.Blob("", data).digest
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise RegistryError(f"registry {self.config.host} served manifest {reference} "
                                f"with digest {served}, but its bytes hash to {digest}")
        return digest, data

    def put_manifest(self, reference: str, blob: oci.Blob) -> None:
        """PUT the exact bytes (never re-serialised) with their media type, and see the
        registry confirm their digest: its ``Docker-Content-Digest``, else a HEAD.

        Raises :class:`BlobsMissing` when the registry lacks a blob the manifest names (or a
        child manifest of an index): distribution checks every one before it stores a
        manifest, so a PUT that succeeds proves they are all there.
        """
        response = self.transport.do_request(
            self._manifest_url(reference), "PUT", data=blob.data,
            headers={"Content-Type": blob.media_type})
        if response.status_code not in (200, 201):
            missing = response.status_code == 400 and any(
                code in _BLOB_UNKNOWN for code, _ in _errors(response))
            raise self._fail(f"PUT of manifest {reference}", response,
                             BlobsMissing if missing else RegistryError)
        served = response.headers.get("Docker-Content-Digest", "")
        if served and served != blob.digest:
            raise RegistryError(f"registry {self.config.host} stored {reference} as {served}, "
                                f"not {blob.digest}: it rewrote the manifest")
        self._count(len(blob.data))
        if served:
            return
        confirmed = self.manifest_digest(reference)  # no header: ask what the tag is now
        if confirmed != blob.digest:
            raise self._not_registry(
                f"PUT of manifest {reference}",
                f"{response.status_code} without a digest, and {reference} then resolves "
                f"to {confirmed or 'nothing'}, not {blob.digest}")

    def referrers(self, digest: str) -> bytes | None:
        """The referrers API's image index for ``digest`` (distribution spec 1.1), or None
        when the registry has no such API (it answers 404: then the ``sha256-<hex>`` tag
        schema is the fallback)."""
        url = (f"{self.transport.prefix}://{self.container.registry}/v2/"
               f"{self.container.api_prefix}/referrers/{digest}")
        response = self.transport.do_request(url, "GET",
                                              headers={"Accept": oci.INDEX_MEDIA_TYPE})
        if response.status_code in (404, 405):
            return None
        if response.status_code != 200:
            raise self._fail(f"GET of the referrers of {digest}", response)
        data = bytes(response.content)
        if not _is_manifest(data):
            raise self._not_registry(f"GET of the referrers of {digest}",
                                     f"{len(data)} bytes, not an OCI image index")
        return data

    def has_blob(self, descriptor: Descriptor) -> bool:
        """One HEAD: does the repository hold this blob? Only a 200 that states the
        blob's size and digest says yes (anything else and the blob is sent)."""
        response = self.transport.get_blob(self.container, descriptor.digest, head=True)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise self._fail(f"HEAD of blob {descriptor.digest}", response)
        return _proves(response, descriptor)

    def upload_blob(self, path: Path, descriptor: Descriptor) -> None:
        """POST + PUT (oras-py's ``put_upload``), without asking first whether it is there.

        The file is read once, here; the registry checks its digest as it commits the
        upload. Done only when the registry confirms it: the final answer's
        ``Docker-Content-Digest``, else a HEAD that states the blob's size and digest.
        """
        layer = descriptor.oci()
        try:
            response = self.transport.put_upload(str(path), self.container, layer)
        except ValueError:  # oras-py: the POST's answer had no upload location
            raise RegistryError(f"registry {self.config.host} did not start an upload for "
                                f"blob {descriptor.digest} (no Location in its answer to "
                                f"POST /v2/{self.config.path}/blobs/uploads/)") from None
        if response.status_code not in (200, 201, 202):
            raise self._fail(f"upload of blob {descriptor.digest}", response)
        served = response.headers.get("Docker-Content-Digest", "")
        if served and served != descriptor.digest:
            raise RegistryError(f"registry {self.config.host} stored blob "
                                f"{descriptor.digest} as {served}: the bytes changed on the "
                                "way; try again, or ask its operators")
        if served == descriptor.digest or self.has_blob(descriptor):
            self._count(descriptor.size)
            return
        raise self._not_registry(
            f"upload of blob {descriptor.digest}",
            f"{response.status_code} without a digest, and a HEAD of the blob then did not "
            f"state its size ({descriptor.size}) and digest")

    def _not_registry(self, what: str, answer: str) -> RegistryError:
        return RegistryError(
            f"registry {self.config.host} answered {what} with {answer}: this is not a "
            f"conforming OCI registry, nothing was recorded as sent; check that "
            f"{self.config.source} names the registry itself")

    def parallel(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``function`` over ``items`` on up to ``POOL_SIZE`` connections; results in order.

        The first item's error wins, so a failure reads the same however threads interleave.
        """
        from esp32tasks.registry.http import POOL_SIZE

        todo = list(items)
        if len(todo) <= 1:
            return [function(item) for item in todo]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(POOL_SIZE, len(todo))) as pool:
            futures = [pool.submit(function, item) for item in todo]
        return [future.result() for future in futures]

    def get_blob(self, digest: str) -> bytes:
        response = self.transport.get_blob(self.container, digest)
        if response.status_code != 200:
            raise self._fail(f"GET of blob {digest}", response)
        return bytes(response.content)


_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")


def _proves(response: Any, descriptor: Descriptor) -> bool:
    """Does a blob's 200 state its size and digest (distribution sends both)?"""
    headers: Mapping[str, str] = response.headers
    return (headers.get("Docker-Content-Digest") == descriptor.digest
            and headers.get("Content-Length") == str(descriptor.size))


def _is_manifest(data: bytes) -> bool:
    """An OCI (or Docker v2) manifest or index: a JSON object of schemaVersion 2."""
    try:
        document = json.loads(data)
    except ValueError:
        return False
    return isinstance(document, dict) and bool(document.get("schemaVersion") == 2)


def _errors(response: Any) -> list[tuple[str, str]]:
    """``(code, message)`` of each error in a registry's JSON answer (none if not JSON)."""
    try:
        errors = response.json().get("errors") or []
        return [(str(e.get("code")), str(e.get("message"))) for e in errors]
    except (ValueError, AttributeError):
        return []
