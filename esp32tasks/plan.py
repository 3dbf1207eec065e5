"""The release matrix with every name decided: a pure function of config and git state.

Actions never re-derive a path, tag or key; they read them from a :class:`Step`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from esp32tasks import secureboot
from esp32tasks.config import DEFAULT_STORE, KNOWN_CHIPS, MAX_TAG_LENGTH, Key, Release, Target
from esp32tasks.errors import ConfigError
from esp32tasks.gitinfo import GitState
from esp32tasks.version import Version
from esp32tasks.version import parse as parse_version

__all__ = [
    "BUILD_DIR",
    "DIRTY",
    "RESERVED",
    "STATE_FILE",
    "TAG",
    "Channel",
    "Delta",
    "Plan",
    "Step",
    "Variant",
    "channel_tag",
    "expand",
    "image_tag",
    "index_annotations",
    "index_tag",
]

BUILD_DIR = PurePosixPath("build")
RECEIPTS = BUILD_DIR / "receipts"
OCI_DIR = BUILD_DIR / "oci"
#: Delta OTA patches and the base apps they are made from, per published step.
DELTA_DIR = BUILD_DIR / "delta"
#: doit's dependency state (sqlite3), relative to the repository root. Inside build/ so
#: that CI caches one directory, and so that its journal never touches the root's mtime.
STATE_FILE = (BUILD_DIR / "doit-state.sqlite3").as_posix()
#: What git said last time, with the stat signature that keeps it valid.
GIT_CACHE = BUILD_DIR / "gitstate.json"
#: The store directory when targets.toml names none.
STORE_DIR = PurePosixPath(DEFAULT_STORE)
#: The store directory (under the release's prefix) where shards leave their receipts.
SHARDS: Final = "shards"
#: What else lives in build/ beside the targets' build dirs: the state's lock
#: (tasks.state) and sqlite's rollback journal. A target of one of these names would build
#: into (and `doit clean` would delete) esp32tasks' own files.
RESERVED = frozenset(path.name for path in (
    RECEIPTS, OCI_DIR, DELTA_DIR, STORE_DIR, GIT_CACHE, PurePosixPath(STATE_FILE),
    PurePosixPath(f"{STATE_FILE}.lock"), PurePosixPath(f"{STATE_FILE}-journal"),
) if path.parent == BUILD_DIR)


DIRTY: Final = "-dirty"
#: The OCI distribution spec's tag grammar.
TAG: Final = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


def image_tag(target: str, app_type: str, version: str, git: GitState,
              key: str | None = None) -> str:
    """``<target>-<app_type>-<version>[-<key>]-<sha7>``, with ``-dirty`` for uncommitted
    changes."""
    tag = f"{target}-{app_type}-{version}{_key_part(key)}-{git.short}"
    return f"{tag}{DIRTY}" if git.dirty else tag


def index_tag(app_type: str, version: str, *, dirty: bool = False,
              key: str | None = None) -> str:
    """``<app_type>-<version>[-<key>]``: the released version; a dirty tree's ends in
    ``-dirty``."""
    return f"{app_type}-{version}{_key_part(key)}{DIRTY if dirty else ''}"


def channel_tag(app_type: str, channel: str, key: str | None = None) -> str:
    return f"{app_type}-{channel}{_key_part(key)}"


def _key_part(key: str | None) -> str:
    return "" if key is None else f"-{key}"


#: Between a target (or channel) name and a key in task and receipt names: never part of a
#: target name (``[a-z0-9][a-z0-9._-]*``), so ``esp32c3@prod`` is no target's.
AT: Final = "@"


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    """One target in one variant: where its build goes, what it depends on, and every name
    it publishes. An unsigned step's inputs are its build's receipts; a signed step's are
    those its ``sign:<target>@<key>`` task writes, of the same kinds."""

    target: Target
    key: Key | None = None
    """The key this step's images are signed with (None: the unsigned build itself)."""
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
    """``<project>/<app_type>-<version>[-dirty]/<target>/artifacts/``."""

    signed_dir: PurePosixPath | None = None
    """``build/<target>@<key>/``: the signed app and bootloader (a signed step's)."""

    @property
    def signing(self) -> tuple[Key, PurePosixPath]:
        """A signed step's key and directory (a ValueError for an unsigned step: a bug)."""
        if self.key is None or self.signed_dir is None:
            raise ValueError(f"{self.name} is not a signed step")
        return self.key, self.signed_dir

    @property
    def name(self) -> str:
        """The task name's part: ``<target>`` or ``<target>@<key>``."""
        return self.target.name if self.key is None else f"{self.target.name}{AT}{self.key.name}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Variant:
    """What one key publishes (or the unsigned build): an image per target it signs, one
    index, its channels, its place in the store."""

    key: Key | None
    steps: tuple[Step, ...]
    index_tag: str
    index_receipt: PurePosixPath
    push_index_receipt: PurePosixPath
    prefix: str
    """``<project>/<app_type>-<version>[-<key>][-dirty]/``: its artifacts' directory."""
    channels: tuple[Channel, ...] = ()
    """The channels this run moves for it, after its index is pushed."""

    @property
    def suffix(self) -> str:
        """``""`` or ``@<key>``: what task names of this variant end in."""
        return "" if self.key is None else f"{AT}{self.key.name}"

    @property
    def index_task(self) -> str:
        return f"index{self.suffix}"

    @property
    def push_index_task(self) -> str:
        return f"push-index{self.suffix}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Delta:
    """One published step's patches: from each base version's app to this one."""

    step: Step
    bases: tuple[str, ...]
    receipt: PurePosixPath
    """``build/receipts/delta-<step>.json``."""
    push_receipt: PurePosixPath
    """``build/receipts/push-delta-<step>.json``: the patches as the image's referrers."""
    dir: PurePosixPath
    """``build/delta/<step>/``: the base apps (cached) and the patches."""
    store_prefix: str
    """``<variant prefix><target>/delta/``: ``from-<base>.patch`` goes there."""
    base_manifests: tuple[tuple[str, str], ...]
    """(base version, the store key of its release.json)."""

    @property
    def name(self) -> str:
        return self.step.name

    def patch_name(self, base: str) -> str:
        return f"from-{base}.patch"


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    release: Release
    git: GitState
    steps: tuple[Step, ...]
    """The builds: one unsigned step per target (every variant is made from these)."""
    variants: tuple[Variant, ...]
    """What is published: the unsigned variant (without keys, or with publish_unsigned),
    then one per key."""
    oci_dir: PurePosixPath
    release_prefix: str
    """``<project>/<app_type>-<version>[-dirty]/``: where the release manifest goes."""
    deltas: tuple[Delta, ...] = ()
    """With ``[delta]``: one per published step."""
    warnings: tuple[str, ...] = ()
    """What the user should know but that stops nothing (printed once per run)."""

    @property
    def version(self) -> Version:
        """The release's version, parsed (config lets only versions through)."""
        found = parse_version(self.release.project.version)
        if found is None:
            raise ConfigError([f"{self.release.project.version_source}: "
                               f"'{self.release.project.version}' is not a version"])
        return found

    @property
    def snapshot(self) -> bool:
        """A version git describe counted from a tag: unique per commit."""
        return self.version.snapshot

    @property
    def signed(self) -> tuple[Step, ...]:
        """Every signed step (one ``sign`` task each)."""
        return tuple(s for v in self.variants if v.key is not None for s in v.steps)

    @property
    def published(self) -> tuple[Step, ...]:
        """Every step of every variant: one ``tag``, ``upload`` and ``push`` task each."""
        return tuple(s for v in self.variants for s in v.steps)

    @property
    def channels(self) -> tuple[Channel, ...]:
        return tuple(c for v in self.variants for c in v.channels)

    # -- shards: which steps this run makes (``targets=``), or none (``publish-index``) --

    @property
    def sharded(self) -> bool:
        """A shard's run: it publishes its targets' images and artifacts, and leaves their
        receipts in the store for ``doit publish-index`` (no index, release.json or
        channel)."""
        return self.release.shard is not None and not self.release.assemble

    @property
    def assembling(self) -> bool:
        """``doit publish-index``: every index, release.json and channel, from the shards'
        receipts; nothing is built here."""
        return self.release.assemble

    def here(self, target: str) -> bool:
        """This run builds and publishes ``target`` itself."""
        shard = self.release.shard
        return not self.release.assemble and (shard is None or target in shard)

    @property
    def local_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if self.here(s.target.name))

    @property
    def local_signed(self) -> tuple[Step, ...]:
        return tuple(s for s in self.signed if self.here(s.target.name))

    @property
    def local_published(self) -> tuple[Step, ...]:
        return tuple(s for s in self.published if self.here(s.target.name))

    @property
    def local_deltas(self) -> tuple[Delta, ...]:
        return tuple(d for d in self.deltas if self.here(d.step.target.name))

    def shard_key(self, step: Step) -> str:
        """Where a shard leaves ``step``'s receipts in the store."""
        return f"{self.release_prefix}{SHARDS}/{step.name}.json"

    def share_receipt(self, step: Step) -> PurePosixPath:
        """The local copy of what :meth:`shard_key` holds (the ``share:`` task's target)."""
        return RECEIPTS / f"share-{step.name}.json"

    def build_of(self, step: Step) -> Step:
        """The unsigned build step a (signed) step is made from."""
        return next(s for s in self.steps if s.target.name == step.target.name)

    def delta_of(self, step: Step) -> Delta | None:
        """The published step's patches, with ``[delta]``."""
        return next((d for d in self.deltas if d.step == step), None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Channel:
    """A moving name: the index tag ``<app_type>-<channel>[-<key>]`` and the store's
    pointer."""

    name: str
    tag: str
    pointer_key: str
    """``<project>/channels/<app_type>-<channel>[-<key>].json``."""
    key: str | None = None

    @property
    def task(self) -> str:
        """``<channel>`` or ``<channel>@<key>``: the ``channel:`` task's name."""
        return self.name if self.key is None else f"{self.name}{AT}{self.key}"


def channel(project_name: str, app_type: str, name: str, key: str | None = None) -> Channel:
    tag = channel_tag(app_type, name, key)
    return Channel(name=name, tag=tag, pointer_key=f"{project_name}/channels/{tag}.json",
                   key=key)


def expand(release: Release, git: GitState) -> Plan:
    """Decide every name. Raises :class:`ConfigError` for per-target files that are missing,
    and for config that would put the user's files among ours in build/ (every problem)."""
    project = release.project
    app_dir = project.app_dir
    problems = _app_in_build(release)
    files = _included(project.exclude, app_dir, git.files)
    chip_files, chip_claimed = _chip_defaults(release, set(files))
    # A file some target claims belongs to the targets that claim it, and no other.
    claimed = {_under(app_dir, f) for t in release.targets for f in t.own_files}
    claimed.update(chip_claimed)
    # targets.toml's settings reach each task through config_changed, not as a file
    claimed.add(release.path.relative_to(release.root).as_posix())
    shared = tuple(f for f in files if f not in claimed)
    the_index = index_tag(project.app_type, project.version, dirty=git.dirty)
    release_prefix = f"{project.name}/{the_index}/"
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
            sources=tuple(sorted(set(shared) | set(own) | set(chip_files.get(target.name, ())))),
            build_receipt=RECEIPTS / f"build-{target.name}.json",
            app_receipt=RECEIPTS / f"app-{target.name}.json",
            image_receipt=RECEIPTS / f"image-{target.name}.json",
            upload_receipt=RECEIPTS / f"upload-{target.name}.json",
            push_receipt=RECEIPTS / f"push-{target.name}.json",
            tag=image_tag(target.name, project.app_type, project.version, git),
            store_prefix=f"{release_prefix}{target.name}/artifacts/",
        ))
    problems += _store_in_build(release)
    # a dirty tree is never promoted: channels asked for stay (the preflight refuses them),
    # the defaults of targets.toml are left out
    names = () if git.dirty and not project.channels_source else project.channels
    if release.shard is not None and not release.assemble:
        names = ()  # a shard moves no channel: publish-index does, once every shard is in
    variants = []
    if not release.keys or project.publish_unsigned:
        variants.append(_variant(release, git, None, tuple(steps), names))
    for key in release.keys:
        signs = key.targets or tuple(t.name for t in release.targets)
        variants.append(_variant(release, git, key, tuple(
            _signed(release, git, key, step) for step in steps if step.name in signs), names))
    app_type, version = ("app_type", project.app_type), ("version", project.version)
    tags: list[tuple[str, Parts]] = []
    for variant in variants:
        key_part = () if variant.key is None else (("key name", variant.key.name),)
        tags += [(s.tag, (("target name", s.target.name), app_type, version, *key_part))
                 for s in variant.steps]
        tags.append((variant.index_tag, (app_type, version, *key_part)))
        tags += [(c.tag, (app_type, ("channel", c.name), *key_part)) for c in variant.channels]
    problems += _tag_problems(release, tags)
    if release.delta is not None and project.version in release.delta.bases:
        problems.append(f"{release.path.name}: delta.bases: '{project.version}' is this "
                        "release's own version; list earlier releases")
    if problems:
        raise ConfigError(problems)
    warnings = [] if len(shared) <= MANY_SOURCES else [
        f"{release.path.name}: every target depends on {len(shared)} files in "
        f"'{app_dir}' (most in {_biggest(shared, app_dir)}); leave out what is no source "
        "with [project] exclude = [...] (gitignore patterns), or a narrower app_dir"]
    warnings += dict.fromkeys(
        f"{signer.where}: {found}" for variant in variants
        if (signer := variant.key) is not None for step in variant.steps
        if (found := secureboot.warning(step.target.chip, signer.scheme)) is not None)
    return Plan(
        release=release,
        git=git,
        steps=tuple(steps),
        variants=tuple(variants),
        oci_dir=OCI_DIR,
        release_prefix=release_prefix,
        deltas=_deltas(release, variants),
        warnings=tuple(warnings),
    )


def _deltas(release: Release, variants: list[Variant]) -> tuple[Delta, ...]:
    if release.delta is None:
        return ()
    project = release.project
    manifests = tuple((base, f"{project.name}/{index_tag(project.app_type, base)}/release.json")
                      for base in release.delta.bases)
    return tuple(Delta(step=step, bases=release.delta.bases,
                       receipt=RECEIPTS / f"delta-{step.name}.json",
                       push_receipt=RECEIPTS / f"push-delta-{step.name}.json",
                       dir=DELTA_DIR / step.name,
                       store_prefix=f"{variant.prefix}{step.target.name}/delta/",
                       base_manifests=manifests)
                 for variant in variants for step in variant.steps)


def _variant(release: Release, git: GitState, key: Key | None, steps: tuple[Step, ...],
             channels: tuple[str, ...]) -> Variant:
    project = release.project
    name = None if key is None else key.name
    tag = index_tag(project.app_type, project.version, dirty=git.dirty, key=name)
    at = "" if key is None else f"{AT}{key.name}"
    return Variant(
        key=key,
        steps=steps,
        index_tag=tag,
        index_receipt=RECEIPTS / f"index{at}.json",
        push_index_receipt=RECEIPTS / f"push-index{at}.json",
        prefix=f"{project.name}/{tag}/",
        channels=tuple(channel(project.name, project.app_type, c, name) for c in channels),
    )


def _signed(release: Release, git: GitState, key: Key, step: Step) -> Step:
    """``step``'s target signed with ``key``: its receipts are the sign task's."""
    project = release.project
    name = f"{step.target.name}{AT}{key.name}"
    tag = index_tag(project.app_type, project.version, dirty=git.dirty, key=key.name)
    return Step(
        target=step.target,
        key=key,
        build_dir=step.build_dir,
        log=step.log,
        sources=step.sources,
        build_receipt=RECEIPTS / f"build-{name}.json",
        app_receipt=RECEIPTS / f"app-{name}.json",
        image_receipt=RECEIPTS / f"image-{name}.json",
        upload_receipt=RECEIPTS / f"upload-{name}.json",
        push_receipt=RECEIPTS / f"push-{name}.json",
        tag=image_tag(step.target.name, project.app_type, project.version, git, key.name),
        store_prefix=f"{project.name}/{tag}/{step.target.name}/artifacts/",
        signed_dir=BUILD_DIR / name,
    )


#: A source set bigger than this is most likely not all sources: warn (issue: a venv).
MANY_SOURCES: Final = 5000


def _included(patterns: tuple[str, ...], app_dir: PurePosixPath,
              files: tuple[str, ...]) -> tuple[str, ...]:
    """``files`` without those ``[project] exclude`` matches (relative to the app dir)."""
    if not patterns:
        return files
    import pathspec  # only with patterns: the no-op budget

    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    inside = "" if app_dir.as_posix() == "." else app_dir.as_posix() + "/"
    return tuple(f for f in files if not spec.match_file(f.removeprefix(inside)))


def _chip_defaults(release: Release, files: set[str]) -> tuple[dict[str, list[str]], set[str]]:
    """With the ``idf`` builder: target name -> its ``<defaults>.<chip>`` files in the app
    (ESP-IDF applies ``F.<chip>`` by itself for each SDKCONFIG_DEFAULTS file ``F``,
    ``sdkconfig.defaults`` when none), and every such file of any chip: no other target's."""
    if release.builder.kind != "idf":
        return {}, set()
    app_dir = release.project.app_dir
    names: dict[str, tuple[str, ...]] = {
        t.name: (release.builder.sdkconfig_defaults + t.sdkconfig_defaults)
        or ("sdkconfig.defaults",) for t in release.targets}
    every = {path for defaults in names.values() for name in defaults for chip in KNOWN_CHIPS
             if (path := _under(app_dir, f"{name}.{chip}")) in files}
    mine = {t.name: [p for name in names[t.name]
                     if (p := _under(app_dir, f"{name}.{t.chip}")) in files]
            for t in release.targets}
    return mine, every


def _biggest(files: tuple[str, ...], app_dir: PurePosixPath) -> str:
    """The three directories (first level under the app dir) holding the most files."""
    inside = "" if app_dir.as_posix() == "." else app_dir.as_posix() + "/"
    counts = Counter(f.removeprefix(inside).split("/", 1)[0] + "/" for f in files
                     if "/" in f.removeprefix(inside))
    return ", ".join(f"{d} ({n})" for d, n in counts.most_common(3)) or "the app's top level"


Parts = tuple[tuple[str, str], ...]
"""A tag's parts: (what the user calls it, its value)."""


def _tag_problems(release: Release, tags: list[tuple[str, Parts]]) -> list[str]:
    """Every composed tag against the OCI tag grammar (128 characters at most); a tag too
    long names its longest part."""
    problems = []
    for tag, parts in tags:
        if TAG.fullmatch(tag):
            continue
        if len(tag) > MAX_TAG_LENGTH:
            what, value = max(parts, key=lambda part: len(part[1]))
            problems.append(
                f"the tag '{tag}' is {len(tag)} characters, over the {MAX_TAG_LENGTH} OCI "
                f"allows; its longest part is the {what} '{value}' ({len(value)}): shorten it")
        else:
            problems.append(f"the tag '{tag}' is not a valid OCI tag "
                            "([a-zA-Z0-9_][a-zA-Z0-9._-]*); fix the names it is made of")
    return [f"{release.path.name}: {p}" for p in dict.fromkeys(problems)]


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


def index_annotations(plan: Plan, variant: Variant) -> dict[str, str]:
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
    if variant.key is not None:
        annotations["dev.esp32tasks.key"] = variant.key.name
        annotations["dev.esp32tasks.key-scheme"] = variant.key.scheme
    return annotations
