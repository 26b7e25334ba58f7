"""Crash-safe file writes: a temp file in the same folder, fsync, then an atomic rename, so a
reader (or a crash) never sees a half-written file. Also: a free-space check made before a long
job starts writing, so a full disk fails at once rather than hours in."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from medgen.errors import UserError

# write errors the user fixes on their side (space, quota, read-only or forbidden folder)
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, getattr(errno, "EDQUOT", errno.ENOSPC)}


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """UserError naming ``folder`` when its filesystem has less than ``needed`` bytes free.
    ``folder`` need not exist yet: its nearest existing parent is measured."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise UserError(f"not enough free disk space for {what}: {format_bytes(free)} free, "
                        f"about {format_bytes(needed)} needed; free some space or choose another folder", folder)


@contextlib.contextmanager
def output_folder_lock(path: str | Path, what: str):
    """Hold ``<parent>/.<name>.lock`` while a command fills the folder ``path``: a second command
    aiming at the same folder is refused (UserError naming the folder and the holder's pid) instead
    of writing its files between the first one's, or deleting them with ``--force``, or (having
    passed the "already exists" check before the first one wrote anything) deleting them without it.
    Yields the folder's absolute path."""
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with acquire_lock(target.parent / f".{target.name}.lock", f"{what} {target}"):
        yield target


@contextlib.contextmanager
def fresh_output_folder(path: str | Path, force: bool, what: str):
    """An empty folder at ``path`` for a command's outputs, held (``output_folder_lock``) until the
    block ends: a non-empty one is replaced only with ``force``; a file there is never replaced.
    ``what`` names it in messages ("sample folder"). Yields ``path``."""
    path = Path(path)
    with output_folder_lock(path, what):
        if path.exists() and not path.is_dir():
            raise UserError(f"{what} is a file, not a folder; give a folder to --out", path)
        if path.exists() and any(path.iterdir()):
            if not force:
                raise UserError(f"{what} already exists; use --force to replace it or --out for another", path)
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        yield path


def refuse_overwrite(path: str | Path, force: bool, what: str) -> None:
    """UserError when ``path`` exists (a result of an earlier command) and ``force`` is not given."""
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{what} already exists; use --force to replace it or --out for another folder", path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet shows as text: one starting like a formula (=, +, -, @) gets a
    leading apostrophe, as OWASP advises for CSV injection; numbers such as -1.5 stay as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def load_yaml_text(text: str, path: str | Path, mapping: bool = True):
    """YAML a user may have edited, safely (no Python tags); a problem is a one-line UserError with its
    line and column."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"not valid YAML ({where}{' '.join(str(problem).split())})", path) from None
    if mapping and not isinstance(value, (dict, type(None))):
        raise UserError("YAML file must be a mapping of sections", path)
    return value if value is not None or not mapping else {}


def read_json(path: str | Path, default=None):
    """A JSON file medgen wrote; a damaged one (cut, binary, edited by hand) is a UserError naming it."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        from medgen.errors import one_line

        raise UserError(f"not a valid JSON file ({one_line(err)})", path) from None


class HeldLock:
    """An exclusive advisory lock (``flock``) on a small file holding the owner's pid. The kernel
    drops it when the process ends, however it ends, so a crash never leaves a stale lock."""

    def __init__(self, path: Path, handle, remove: bool):
        self.path, self._handle, self._remove = path, handle, remove

    def release(self) -> None:
        if self._handle is None:
            return
        if self._remove:  # unlinked while still held: a process that opened it meanwhile sees another inode
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._handle.close()
        self._handle = None

    def __enter__(self) -> "HeldLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(path: str | Path) -> int | None:
    """The pid holding the lock at ``path``, or None when nobody holds it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no locking
        return None
    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = f.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def acquire_lock(path: str | Path, what: str, remove: bool = True) -> HeldLock:
    """Hold the lock at ``path`` or raise UserError naming the pid that holds it. ``what`` says
    what is being protected (``"this run directory"``); ``remove`` deletes the file on release."""
    path = Path(path)
    try:
        import fcntl
    except ImportError:
        return HeldLock(path, None, False)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            raise UserError(f"{what} is in use by another medgen process (pid {pid}); wait for it to end, "
                            f"or stop it first", path.parent) from None
        try:  # the holder may have removed and released the file between our open and our lock
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return HeldLock(path, handle, remove)
