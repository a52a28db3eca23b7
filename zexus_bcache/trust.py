"""Whose files we may use: a cache or config another user could have written is never used.

The rule (git's ``safe.directory``, OpenSSH's StrictModes): the file, its SQLite side files and every
directory on the path to them, symbolic links included, must be owned by us or by root and not be
writable by other users. A directory that others may write to is allowed only above the file's own
directory and only with the sticky bit (``/tmp``: others cannot rename or replace what is ours in
it). Group write counts as others' write unless the group is our own primary group and lists no
other member. A file that does not exist yet is judged by the directories that do; we then create
the missing directories 0700 and the file 0600 ourselves (never through a symbolic link) and judge
the whole path again before opening it, so a directory planted in the meantime is refused too.

``ZEXUS_BCACHE_ALLOW_WORLD_WRITABLE=1`` trusts every path (for a cache shared on purpose).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

try:  # POSIX only; imported up front so that a process that drops privileges later still has them
    import grp
    import pwd
except ImportError:  # pragma: no cover - not POSIX
    grp = pwd = None  # type: ignore[assignment]

ALLOW_ENV = "ZEXUS_BCACHE_ALLOW_WORLD_WRITABLE"


def allowed_by_env() -> bool:
    """Whether the user chose to trust caches other users can write (the escape hatch)."""
    return os.environ.get(ALLOW_ENV, "").strip() == "1"


def problem(path: str | os.PathLike[str], *, side_files: tuple[str, ...] = ()) -> str | None:
    """Why another user could have planted path (or ``path + suffix`` for each side file); None if nobody could."""
    if os.name != "posix":
        return None
    me = os.geteuid()
    target = Path(os.path.abspath(path))
    why = _link_problem(target.parents, me) or _link_problem(
        (target, *(target.with_name(target.name + s) for s in side_files)), me
    )
    if why:
        return why
    real = Path(os.path.realpath(target))
    for file in (real, *(real.with_name(real.name + s) for s in side_files)):
        try:
            st = os.stat(file)
        except (FileNotFoundError, NotADirectoryError):
            continue
        why = _owner_problem(file, st, me) or (
            f"{file} is writable by other users" if _others_can_write(st) else None
        )
        if why:
            return why
    for directory in real.parents:
        try:
            st = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue  # we create it, 0700, and judge again
        why = _owner_problem(directory, st, me)
        if why:
            return why
        if _others_can_write(st):
            if directory == real.parent:
                return f"its directory {directory} is writable by other users"
            if not st.st_mode & stat.S_ISVTX:
                return f"the directory {directory} on its path is writable by other users"
    return None


def refusal(path: str | os.PathLike[str], what: str, *, side_files: tuple[str, ...] = ()) -> str | None:
    """A message refusing path (what: "cache", "config file"), or None if it is trusted (or trusted by choice)."""
    if allowed_by_env():
        return None
    why = problem(path, side_files=side_files)
    if why is None:
        return None
    return (
        f"{path}: refusing to use this {what}: {why}, so another user could have planted it;"
        f" make it yours and private (chown, chmod go-w) or set {ALLOW_ENV}=1 to trust it anyway"
    )


def create_private(path: str | os.PathLike[str]) -> None:
    """Create path's missing directories (0700, whatever the umask) and path itself (0600) if missing.

    Never through a symbolic link: an existing link (dangling or not) is left alone for the trust
    check to judge.
    """
    target = Path(os.path.abspath(path))
    missing = []
    for directory in (target.parent, *target.parent.parents):
        if os.path.lexists(directory):
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        os.close(os.open(target, flags, 0o600))
    except FileExistsError:
        pass


def _link_problem(paths: Iterable[Path], me: int) -> str | None:
    """A symbolic link among paths that another user owns."""
    for item in paths:
        try:
            st = os.lstat(item)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (me, 0):
            return f"the symbolic link {item} belongs to another user (uid {st.st_uid})"
    return None


def _owner_problem(path: Path, st: os.stat_result, me: int) -> str | None:
    if st.st_uid in (me, 0):
        return None
    return f"{path} belongs to another user (uid {st.st_uid})"


def _others_can_write(st: os.stat_result) -> bool:
    if st.st_mode & stat.S_IWOTH:
        return True
    return bool(st.st_mode & stat.S_IWGRP) and not _own_private_group(st.st_gid)


def _own_private_group(gid: int) -> bool:
    """Whether gid is our primary group and names no other member (a user-private group)."""
    if gid != os.getegid():
        return False
    if grp is None or pwd is None:
        return False
    try:
        members = set(grp.getgrgid(gid).gr_mem)
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return False
    return members <= {me}
