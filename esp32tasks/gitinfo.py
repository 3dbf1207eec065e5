"""What git tells us: the commit (tags carry its short SHA), dirtiness, and the source files."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from esp32tasks.errors import GitError
from esp32tasks.files import write_atomic
from esp32tasks.version import TAG_PATTERN

__all__ = ["GitState", "read"]


@dataclass(frozen=True, kw_only=True, slots=True)
class GitState:
    revision: str
    """Full SHA of HEAD."""
    dirty: bool
    """Tracked changes or untracked, not ignored files outside ``ignore`` paths."""
    commit_time: str
    """HEAD's committer time, RFC 3339 UTC: reproducible, unlike the build time."""
    files: tuple[str, ...]
    """Files under the app dir (tracked and untracked not ignored, existing), repo-root relative."""
    described: str | None = None
    """``git describe --tags --long --abbrev=7 --match 'v[0-9]*'`` (when asked for; None
    when no such tag reaches HEAD): ``v1.0.1-3-gabc1234``."""

    @property
    def short(self) -> str:
        return self.revision[:7]


def read(root: Path, app_dir: PurePosixPath, ignore: Iterable[str],
         cache: Path | None = None, *, describe: bool = False) -> GitState:
    """Everything a plan needs from git; paths are relative to ``root``.

    ``ignore`` lists root-relative prefixes (our own outputs and state) that neither count
    as sources nor make the tree dirty, even where the user's .gitignore forgot them.

    With ``cache``, the answer is kept with the stat signature of everything that could
    change it: HEAD, the index, the branch ref, every file git lists, and every directory
    that is not ignored (a new file changes its directory's mtime), and with ``describe``
    the tags (``refs/tags``). When none changed, git is neither imported nor run: that is
    most of a no-op release's cost otherwise.
    """
    skip = tuple(sorted(p.rstrip("/") for p in ignore))
    key = {"app_dir": app_dir.as_posix(), "ignore": list(skip), "describe": describe}
    if cache is not None:
        hit = _from_cache(cache, root, key)
        if hit is not None:
            return hit
    if cache is not None:
        with contextlib.suppress(OSError):  # the cache is only a shortcut; see _keep
            cache.parent.mkdir(parents=True, exist_ok=True)  # before the stats: a change
    state, watched = _ask_git(root, app_dir, skip, describe=describe)
    if cache is not None:
        entry = {"version": _CACHE_VERSION, "key": key, "state": asdict(state),
                 "stats": {p: _stat(str(root), p) for p in watched}}
        _keep(cache, json.dumps(entry, sort_keys=True).encode())
    return state


def _keep(cache: Path, data: bytes) -> None:
    """Write the cache if the disk lets us: it only saves asking git next time.

    A read-only checkout, a full disk or a directory we may not write costs this run's
    answer nothing (git gave it) and the next run a git call; the release's own writes
    report the disk's refusal, if it needs any.
    """
    with contextlib.suppress(OSError):
        write_atomic(cache, data)


_CACHE_VERSION = 2
_BYTECODE_DIR = "__pycache__"


def _stat(root: str, path: str) -> list[int] | None:
    try:
        # os.path, not pathlib: this runs for every file on every no-op release
        st = os.stat(os.path.join(root, path))  # noqa: PTH116, PTH118
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_size]


def _from_cache(cache: Path, root: Path, key: dict[str, Any]) -> GitState | None:
    try:
        data = json.loads(cache.read_bytes())
        if data["version"] != _CACHE_VERSION or data["key"] != key:
            return None
        base = str(root)
        if any(_stat(base, p) != v for p, v in data["stats"].items()):
            return None
        state = data["state"]
        return GitState(revision=state["revision"], dirty=state["dirty"],
                        commit_time=state["commit_time"], files=tuple(state["files"]),
                        described=state["described"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ask_git(root: Path, app_dir: PurePosixPath, skip: tuple[str, ...], *,
             describe: bool) -> tuple[GitState, list[str]]:
    import git  # GitPython: imported only when the cache cannot answer

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GitError(
            f"{root} is not in a git repository; esp32tasks tags every image with the commit "
            "it was built from: run `git init` and commit, or release from a clone"
        ) from None
    try:
        commit = repo.head.commit
    except ValueError:
        raise GitError(
            f"{repo.working_tree_dir}: the repository has no commit yet; commit your sources, "
            "then run doit again"
        ) from None
    cmd = git.Git(str(root))  # paths in its output are relative to `root`

    def wanted(path: str) -> bool:
        # Python's bytecode is never a source; doit's import of dodo.py writes some
        if _BYTECODE_DIR in path.split("/"):
            return False
        return not any(path == p or path.startswith(p + "/") for p in skip)

    # porcelain paths are relative to the top level, not to `root`
    top = Path(repo.working_tree_dir or root).resolve()
    prefix = root.resolve().relative_to(top).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    status = cmd.status("--porcelain=v1", "-z", "--untracked-files=all", "--", ".")
    dirty = False
    for entry in status.split("\0"):
        # "XY path" entries; a rename is followed by an entry holding only the old path
        if len(entry) > 3 and entry[2] == " " and wanted(entry[3 + len(prefix):]):
            dirty = True
            break
    listing = [p for p in cmd.ls_files("-z", "--cached", "--others", "--exclude-standard",
                                       "--", ".").split("\0") if p and wanted(p)]
    inside = app_dir.as_posix().rstrip("/") + "/"
    files = sorted({p for p in listing
                    if (inside == "./" or p.startswith(inside)) and (root / p).is_file()})
    when = datetime.fromtimestamp(commit.committed_date, tz=UTC)
    described = None
    if describe:
        try:
            described = cmd.describe("--tags", "--long", "--abbrev=7",
                                     f"--match={TAG_PATTERN}", "HEAD").strip() or None
        except git.GitCommandError:
            described = None  # no tag matching the pattern reaches HEAD
    state = GitState(
        revision=commit.hexsha,
        dirty=dirty,
        commit_time=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        files=tuple(files),
        described=described,
    )
    ignored = cmd.ls_files("-z", "--others", "--ignored", "--exclude-standard", "--directory",
                           "--", ".").split("\0")
    pruned = set(skip) | {p.rstrip("/") for p in ignored if p.endswith("/")}
    git_dir = Path(repo.git_dir).resolve()
    common = Path(repo.common_dir).resolve()
    head_ref = (git_dir / "HEAD").read_text().strip().removeprefix("ref: ")
    watched = [str(git_dir / "HEAD"), str(git_dir / "index"), str(common / "packed-refs"),
               str(common / head_ref), *listing, *_directories(root, pruned)]
    if describe:  # a tag made or deleted changes refs/tags (or packed-refs, watched above)
        tags = common / "refs" / "tags"
        watched += [str(tags), *(str(p) for p in tags.rglob("*") if p.is_dir())]
    return state, watched


def _directories(root: Path, pruned: set[str]) -> list[str]:
    """Every directory under ``root`` that git does not ignore (``.`` included)."""
    found = ["."]
    for current, dirs, _ in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        keep = []
        for name in dirs:
            rel = name if base == "." else f"{base}/{name}"
            if name not in (".git", _BYTECODE_DIR) and rel not in pruned:
                keep.append(name)
                found.append(rel)
        dirs[:] = keep
    return found
