"""What git tells us: the commit (tags carry its short SHA), dirtiness, and the source files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from esp32tasks.errors import GitError

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

    @property
    def short(self) -> str:
        return self.revision[:7]


def read(root: Path, app_dir: PurePosixPath, ignore: Iterable[str]) -> GitState:
    """Ask git once for everything a plan needs; paths are relative to ``root``.

    ``ignore`` lists root-relative prefixes (our own outputs and state) that neither count
    as sources nor make the tree dirty, even where the user's .gitignore forgot them.
    """
    import git  # GitPython: imported here, so `doit list` and friends pay nothing for it

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
    skip = tuple(p.rstrip("/") for p in ignore)

    def wanted(path: str) -> bool:
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
    listing = cmd.ls_files("-z", "--cached", "--others", "--exclude-standard", "--",
                           app_dir.as_posix())
    files = sorted(
        {p for p in listing.split("\0") if p and wanted(p) and (root / p).is_file()}
    )
    when = datetime.fromtimestamp(commit.committed_date, tz=UTC)
    return GitState(
        revision=commit.hexsha,
        dirty=dirty,
        commit_time=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        files=tuple(files),
    )
