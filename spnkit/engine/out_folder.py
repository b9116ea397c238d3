"""The output folder (``--out``): checked before any work, used by one spnkit process at a time,
and every failure to write into it one ``error:`` line naming the path and the OS's reason.

The claim is a POSIX record lock (``fcntl.lockf``) on ``OUT/.spnkit.lock``, taken without
waiting. The kernel drops it when its process ends, however it ends (SIGKILL included), and a
forked child (a data loader worker) does not inherit it, so a killed run never leaves a stale
lock. The file itself stays (it is only something to lock); it names its holder (pid, host,
command) for the message another process gets, and a writer empties it when it lets go.

Writers (``run``, ``train``, ``sample`` into OUT) claim the folder exclusively; readers (``eval``,
``sample --output`` elsewhere) share it with each other, not with a writer (they would read a
checkpoint half rotated). Only the main process of a multi-process run (rank 0) claims it: the
other processes are the same run. Claims in one process nest (``run`` claims, then ``train``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from spnkit.core.backend import Backend
from spnkit.core.errors import SpnkitError

try:
    import fcntl
except ImportError:  # not a POSIX system: no lock
    fcntl = None

LOCK = ".spnkit.lock"
BUSY = (errno.EACCES, errno.EAGAIN)  # what lockf says when another process holds a conflicting lock


class OutputError(SpnkitError):
    """The output folder cannot be used, or an output cannot be written: one line naming the
    path and the reason."""


class FolderBusy(OutputError):
    """Another spnkit process is using the output folder."""


def reason(exc: OSError) -> str:
    """The OS's words for ``exc`` ('No space left on device')."""
    return exc.strerror or str(exc) or type(exc).__name__


@contextlib.contextmanager
def writing(path: Path, verb: str = "write") -> Iterator[None]:
    """Turns an ``OSError`` in the block into ``OutputError``: ``cannot write PATH (reason)``."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot {verb} {path} ({reason(exc)})") from None


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed to disk and
    renamed over ``path``: a failed or killed write never leaves a partial ``path``. An
    ``OSError`` is ``OutputError`` naming ``path``."""
    temporary = None
    with writing(path):
        try:
            temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
            # 0o666 less the umask, like any new file (mkstemp's files are private)
            with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            if temporary is not None and os.path.exists(temporary):
                os.unlink(temporary)


def unused_name(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/STEM-N.SUFFIX`` for the smallest N >= 1 that names no file yet (a file the
    caller then writes never replaces one)."""
    number = 1
    while (folder / f"{stem}-{number}{suffix}").exists():
        number += 1
    return folder / f"{stem}-{number}{suffix}"


def prepare(folder: Path, option: str = "--out", create: bool = True) -> None:
    """Before any work: ``folder`` exists (made, with its parents, when ``create``), is a folder,
    and a file can be created in it; else ``OutputError`` naming ``option`` and the reason."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder} is a file, not a folder")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{option} {folder}: cannot create the folder ({reason(exc)})") from None
    elif not folder.is_dir():
        raise OutputError(f"{option}: no folder {folder}")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".spnkit-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{option} {folder}: cannot write into the folder ({reason(exc)})") from None


class _Held:
    def __init__(self, handle: int, exclusive: bool) -> None:
        self.handle, self.exclusive = handle, exclusive


_held: dict[str, _Held] = {}  # this process's claims, by real path of the folder


@contextlib.contextmanager
def claim(folder: Path, command: str, *, shared: bool = False) -> Iterator[None]:
    """Hold ``folder`` for the block: exclusively, or ``shared`` with other readers. ``FolderBusy``
    at once when another process holds it in a conflicting way. A folder that does not exist
    (nothing to protect; a writer ``prepare``s it first) is not claimed; a file there is an
    ``OutputError``. A run of several processes claims through ``claim_for_all``."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out {folder} is a file, not a folder")
    if fcntl is None or not folder.is_dir():
        yield
        return
    key = os.path.realpath(folder)
    held = _held.get(key)
    if held is not None:  # nested in this process's own claim
        if not held.exclusive and not shared and _lock(held.handle, folder, shared=False):
            held.exclusive = True
            _describe(held.handle, command)
        yield
        return
    handle = _open(folder / LOCK, shared)
    if handle is None:  # a reader of a folder it may not write into: nobody like it writes there
        yield
        return
    try:
        if _lock(handle, folder, shared):
            _describe(handle, command)  # a reader's descriptor may be read-only: then it says nothing
            _held[key] = _Held(handle, not shared)
        try:
            yield
        finally:
            held = _held.pop(key, None)
            if held is not None and held.exclusive:
                with contextlib.suppress(OSError):
                    os.ftruncate(handle, 0)
    finally:
        os.close(handle)  # drops the lock


class FailedOnMain(SpnkitError):
    """Raised by the other processes of a multi-process run when the main one could not claim
    the output folder: the main process prints the error line, these end with the same status
    and say nothing."""

    @property
    def lines(self) -> list[str]:
        return []


@contextlib.contextmanager
def claim_for_all(folder: Path, command: str, backend: Backend, *, shared: bool = False) -> Iterator[None]:
    """``claim`` for a run of one or more processes on ``backend``: the main process claims
    ``folder`` and tells the others whether it could, so that on a busy folder all stop at once
    with one error line, instead of the others failing with a traceback in their first
    collective, their peer gone."""
    with contextlib.ExitStack() as held:
        failure = None
        if backend.is_main:
            try:
                held.enter_context(claim(folder, command, shared=shared))
            except SpnkitError as exc:
                failure = exc
        if backend.gather(failure is not None)[0]:
            raise failure or FailedOnMain()
        yield


def _open(path: Path, shared: bool) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if not shared:
            raise OutputError(f"cannot write {path} ({reason(exc)})") from None
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


def _lock(handle: int, folder: Path, shared: bool) -> bool:
    """Takes the lock (True), or says the folder is busy; False when the file system has no
    locks (with a warning: nothing keeps a second process out)."""
    try:
        fcntl.lockf(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in BUSY:
            raise FolderBusy(f"{folder} is in use by another spnkit process{_holder(handle)}; "
                             "wait for it or choose another --out") from None
        warnings.warn(f"cannot lock {folder / LOCK} ({reason(exc)}): nothing keeps another spnkit process "
                      "from using the folder at the same time", stacklevel=3)
        return False


def _describe(handle: int, command: str) -> None:
    data = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command}).encode() + b"\n"
    with contextlib.suppress(OSError):  # only words for another process's message
        os.pwrite(handle, data, 0)
        os.ftruncate(handle, len(data))


def _holder(handle: int) -> str:
    """`` (pid 1234, spnkit train)`` from the lock file, or nothing when it does not say. Read
    through ``handle``: closing any other descriptor of the file would drop this process's locks."""
    try:
        about = json.loads(os.pread(handle, 4096, 0))
        pid, command, host = int(about["pid"]), str(about["command"]), str(about.get("host", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f" (pid {pid}{where}, spnkit {command})"
