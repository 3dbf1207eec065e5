"""What a release sends a registry, from the registry's access log: the shapes tests compare.

Shared by the registry test modules (tests/integration/test_registry_*.py).
"""

from __future__ import annotations

from collections import Counter

from tests.servers.registry import Request

__all__ = ["INDEX_TAG", "PATH", "blob_puts", "exact", "full_image", "pushes", "summary",
           "uploads"]

#: The repository path ``configure`` gives the example, and the example's index tag.
PATH = "cloud-iot/hello"
INDEX_TAG = "hello-1.0.0"


def pushes(executed: list[str]) -> list[str]:
    """The push tasks that ran, sorted (other tasks, e.g. the release manifest, left out)."""
    return sorted(t for t in executed if t.startswith("push"))


def summary(requests: list[Request]) -> Counter[str]:
    """``METHOD kind status`` counts, e.g. ``PUT manifest 201``."""
    return Counter(f"{r.method} {r.kind} {r.status}" for r in requests)


def blob_puts(requests: list[Request]) -> set[str]:
    """Digests of blobs uploaded (the ``digest=`` of each upload-session PUT)."""
    return {r.path.split("digest=")[1].replace("%3A", ":")
            for r in requests if r.method == "PUT" and r.kind == "upload"}


def full_image(status_tag: int = 404) -> Counter[str]:
    """A new image, no receipt: the tag checked, two blobs checked and sent, the manifest PUT."""
    return Counter([f"HEAD manifest {status_tag}",
                    "HEAD blob 404", "POST upload 202", "PUT upload 201",
                    "HEAD blob 404", "POST upload 202", "PUT upload 201",
                    "PUT manifest 201"])


def exact(requests: list[Request]) -> list[str]:
    """``METHOD path status``, upload sessions reduced to the digest they commit."""
    out = []
    for r in requests:
        path = r.path
        if r.kind == "upload":
            path = path.split("/uploads/")[0] + "/uploads/" + (
                "?digest=" + path.split("digest=")[1].replace("%3A", ":")
                if "digest=" in path else "")
        out.append(f"{r.method} {path} {r.status}")
    return out


def uploads(*digests: str) -> list[str]:
    """Blob uploads side by side (POST, then PUT each), sorted: threads interleave them."""
    return sorted([f"POST /v2/{PATH}/blobs/uploads/ 202"] * len(digests)
                  + [f"PUT /v2/{PATH}/blobs/uploads/?digest={d} 201" for d in digests])
