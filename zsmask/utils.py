"""Small shared utilities: the user cache folder, atomic directory creation, file hashes, progress lines."""
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from typing import Callable

__all__ = ["cache_dir", "atomic_write", "atomic_write_dir", "atomic_write_text", "cache_lock", "Progress", "sha256_file"]


def cache_dir() -> str:
    """``$ZSMASK_CACHE``, else ``$XDG_CACHE_HOME/zsmask``, else ``~/.cache/zsmask`` (created)."""
    path = os.environ.get("ZSMASK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "zsmask"
    )
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_write_dir(final_path: str):
    """Yield a temporary sibling folder and rename it to ``final_path`` on success, so readers
    never see a half-written folder; on error it is removed. If another process finished
    ``final_path`` first, its result is kept."""
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        yield tmp
        try:
            os.rename(tmp, final_path)
        except OSError:
            if not os.path.isdir(final_path):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def cache_lock(path: str):
    """Hold an exclusive lock on ``<path>.lock`` while building a cache entry, so concurrent
    processes (e.g. the ranks of a multi-process launch) build it once and the others wait and
    then reuse it. Without ``fcntl`` (not POSIX) it does not lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Progress:
    """Throttled progress lines with ETA for long preparation steps, e.g.
    ``toy CLIP pretraining: 120/300 (40%), 55s elapsed, ETA 1m22s``.

    ``update(done)`` prints at most every ``every_s`` seconds (and always at ``total``) via
    ``print_fn`` (default: ``logging.getLogger("zsmask").info``); ``extra`` text is appended.
    """

    def __init__(self, label: str, total: int, every_s: float = 5.0, print_fn=None):
        self.label, self.total, self.every_s = label, max(int(total), 1), every_s
        self._print = print_fn or logging.getLogger("zsmask").info
        self._start = self._last = time.monotonic()

    @staticmethod
    def format_seconds(seconds: float) -> str:
        seconds = int(round(seconds))
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if done < self.total and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = now - self._start
        eta_text = self.format_seconds(elapsed / done * (self.total - done)) if done else "?"
        line = (f"{self.label}: {done}/{self.total} ({100 * done / self.total:.0f}%), "
                f"{self.format_seconds(elapsed)} elapsed, ETA {eta_text}")
        self._print(line + (f", {extra}" if extra else ""))


def atomic_write(path: str, write: Callable, mode: str = "w") -> None:
    """Write ``path`` through ``write(file)`` into a temporary file of the same folder, then
    rename it over ``path``: readers see the old file or the complete new one, never a part.
    On failure the temporary file is removed and ``path`` is untouched."""
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # honours the umask
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`), UTF-8."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), "wb")


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (used to detect damaged cache files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
