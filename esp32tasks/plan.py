"""The release matrix with every name decided: a pure function of config and git state.

Actions never re-derive a path, tag or key; they read them from a :class:`Step`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from esp32tasks.config import DEFAULT_STORE, Release, Target
from esp32tasks.errors import ConfigError
from esp32tasks.gitinfo import GitState

__all__ = [
    "BUILD_DIR",
    "RESERVED",
    "STATE_FILE",
    "Plan",
    "Step",
    "expand",
    "image_tag",
    "index_annotations",
    "index_tag",
]

BUILD_DIR = PurePosixPath("build")
RECEIPTS = BUILD_DIR / "receipts"
OCI_DIR = BUILD_DIR / "oci"
#: doit's dependency state (sqlite3), relative to the repository root. Inside build/ so
#: that CI caches one directory, and so that its journal never touches the root's mtime.
STATE_FILE = (BUILD_DIR / "doit-state.sqlite3").as_posix()
#: What git said last time, with the stat signature that keeps it valid.
GIT_CACHE = BUILD_DIR / "gitstate.json"
#: The store directory when targets.toml names none.
STORE_DIR = PurePosixPath(DEFAULT_STORE)
#: What else lives in build/ beside the targets' build dirs: the state's lock
#: (tasks.state) and sqlite's rollback journal. A target of one of these names would build
#: into (and `doit clean` would delete) esp32tasks' own files.
RESERVED = frozenset(path.name for path in (
    RECEIPTS, OCI_DIR, STORE_DIR, GIT_CACHE, PurePosixPath(STATE_FILE),
    PurePosixPath(f"{STATE_FILE}.lock"), PurePosixPath(f"{STATE_FILE}-journal"),
) if path.parent == BUILD_DIR)


def image_tag(target: str, app_type: str, version: str, git: GitState) -> str:
    """``<target>-<app_type>-<version>-<sha7>``, with ``-dirty`` for uncommitted changes."""
    tag = f"{target}-{app_type}-{version}-{git.short}"
    return f"{tag}-dirty" if git.dirty else tag


def index_tag(app_type: str, version: str) -> str:
    return f"{app_type}-{version}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    """One target: where its build goes, what it depends on, and every name it publishes."""

    target: Target
    build_dir: PurePosixPath
    log: PurePosixPath
    sources: tuple[str, ...]
    """Root-relative files the build depends on: the app's sources plus its own files."""
    build_receipt: PurePosixPath
    """All artifacts with size and SHA-256 (the upload's input)."""
    app_receipt: PurePosixPath
    """The app binary alone (the image's input), so other artifacts cannot re-pack it."""
    image_receipt: PurePosixPath
    upload_receipt: PurePosixPath
    push_receipt: PurePosixPath
    tag: str
    store_prefix: str
    """``<project>/<app_type>-<version>/<target>/artifacts/``."""

    @property
    def name(self) -> str:
        return self.target.name


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    release: Release
    git: GitState
    steps: tuple[Step, ...]
    oci_dir: PurePosixPath
    index_tag: str
    index_receipt: PurePosixPath
    push_index_receipt: PurePosixPath
    release_prefix: str
    """``<project>/<app_type>-<version>/``: where the release manifest goes."""


def expand(release: Release, git: GitState) -> Plan:
    """Decide every name. Raises :class:`ConfigError` for per-target files that are missing,
    and for config that would put the user's files among ours in build/ (every problem)."""
    project = release.project
    app_dir = project.app_dir
    problems = _app_in_build(release)
    # A file some target claims belongs to the targets that claim it, and no other.
    claimed = {_under(app_dir, f) for t in release.targets for f in t.own_files}
    # targets.toml's settings reach each task through config_changed, not as a file
    claimed.add(release.path.relative_to(release.root).as_posix())
    shared = tuple(f for f in git.files if f not in claimed)
    release_prefix = f"{project.name}/{project.app_type}-{project.version}/"
    steps = []
    for index, target in enumerate(release.targets):
        if target.name in RESERVED:
            problems.append(f"{release.path.name}: targets[{index}].name: '{target.name}' is "
                            f"reserved ({BUILD_DIR / target.name} is esp32tasks' own); give "
                            "the target another name")
        own = tuple(_under(app_dir, f) for f in target.own_files)
        for name, path in zip(target.own_files, own, strict=True):
            if _is(release.root / path, Path.is_dir):
                problems.append(f"{release.path.name}: targets[{index}]: '{name}' is a "
                                f"directory in {app_dir}; list the files in it, one by one")
            elif not _is(release.root / path, Path.is_file):
                problems.append(f"{release.path.name}: targets[{index}]: file '{name}' does "
                                f"not exist in {app_dir}; create it or remove it from the list")
        build_dir = BUILD_DIR / target.name
        steps.append(Step(
            target=target,
            build_dir=build_dir,
            log=build_dir / "build.log",
            sources=tuple(sorted(set(shared) | set(own))),
            build_receipt=RECEIPTS / f"build-{target.name}.json",
            app_receipt=RECEIPTS / f"app-{target.name}.json",
            image_receipt=RECEIPTS / f"image-{target.name}.json",
            upload_receipt=RECEIPTS / f"upload-{target.name}.json",
            push_receipt=RECEIPTS / f"push-{target.name}.json",
            tag=image_tag(target.name, project.app_type, project.version, git),
            store_prefix=f"{release_prefix}{target.name}/artifacts/",
        ))
    problems += _store_in_build(release)
    if problems:
        raise ConfigError(problems)
    return Plan(
        release=release,
        git=git,
        steps=tuple(steps),
        oci_dir=OCI_DIR,
        index_tag=index_tag(project.app_type, project.version),
        index_receipt=RECEIPTS / "index.json",
        push_index_receipt=RECEIPTS / "push-index.json",
        release_prefix=release_prefix,
    )


def _under(app_dir: PurePosixPath, name: str) -> str:
    return (app_dir / name).as_posix()


def _is(path: Path, test: Callable[[Path], bool]) -> bool:
    try:
        return test(path)
    except OSError:  # e.g. a name too long for the file system: it is no file of ours
        return False


def _in_build(path: PurePosixPath) -> bool:
    return path.parts[:1] == BUILD_DIR.parts


# build/ is ours: `doit clean` deletes in it and git never sees it. Only the default store
# may live there, and no app.

def _app_in_build(release: Release) -> list[str]:
    app_dir = release.project.app_dir
    if not _in_build(app_dir):
        return []
    return [f"{release.path.name}: project.app_dir: '{app_dir}' is in {BUILD_DIR}/, which "
            f"esp32tasks owns (doit clean deletes there); move the app out of {BUILD_DIR}/"]


def _store_in_build(release: Release) -> list[str]:
    store = PurePosixPath(release.store.url)
    if release.store.is_s3 or not _in_build(store) or store == STORE_DIR:
        return []
    return [f"{release.path.name}: store.url: '{store}' is in {BUILD_DIR}/, which esp32tasks "
            f'owns; use "{STORE_DIR}" (the default) or a directory outside {BUILD_DIR}/ '
            '(e.g. "dist")']


def index_annotations(plan: Plan) -> dict[str, str]:
    """Per-commit facts live on the index, so per-target manifests stay content-only."""
    project = plan.release.project
    annotations = {
        "org.opencontainers.image.version": project.version,
        "org.opencontainers.image.revision": plan.git.revision,
        "org.opencontainers.image.created": plan.git.commit_time,
        "org.opencontainers.image.title": project.name,
        "dev.esp32tasks.app-type": project.app_type,
    }
    if project.source:
        annotations["org.opencontainers.image.source"] = project.source
    if plan.git.dirty:
        annotations["dev.esp32tasks.dirty"] = "true"
    return annotations
