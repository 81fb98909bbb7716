"""Small file helpers shared by every writer: atomic replacement of outputs.

Temporary names say who wrote them: ``.<name>.tmp<pid>-<host>-<kind>-<random><suffix>``
beside the target ``<name>``, where ``<pid>`` is the writing process, ``<host>``
the first 8 hex digits of the SHA-256 of its host name and ``<kind>`` ``new``
(the file or folder being written) or ``old`` (a folder being replaced, moved
aside). After ``kill -9`` (or a power cut) such names stay; the next start of
the command calls :func:`remove_stale_temporaries`, which deletes only those
written on this host by a process that no longer exists. A concurrent writer
into the same folder (``prepare --shard K/N`` on this or another machine) is
alive or on another host, so its temporaries are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    A crash or Ctrl-C while writing leaves the old file (or none), never a
    truncated one. ``suffix`` defaults to the target's own suffix, so writers that
    pick a format from the extension (OpenCV, PyAV) still see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=path.suffix if suffix is None else suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _default_permissions(tmp_path, 0o666)
        os.replace(tmp_path, path)
    except BaseException as exc:
        full = full_disk_error(path, exc)
        tmp_path.unlink(missing_ok=True)
        if full is not None:
            raise full from exc
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success rename it onto ``path``.

    ``path`` must not exist yet, unless ``replace``: then the old folder is
    swapped out only once the new one is complete (renamed aside, the new one
    renamed in, the old one deleted), so a failure leaves the old folder whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), dir=path.parent))
    try:
        yield tmp
        _default_permissions(tmp, 0o777)
        old = None
        if replace and path.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name, "old"), dir=path.parent))
            os.replace(path, old)  # onto the empty placeholder
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        full = full_disk_error(path, exc)
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from exc
        raise


# Free space below which a failed write is taken for a full disk: serializers report it in their own words
# (safetensors "I/O error: No space left on device", torch.save "unexpected pos ..."), not as an OSError.
NEARLY_FULL_BYTES = 64 * 2**20


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free for this user on the disk of ``path`` (an existing file or folder)."""
    return shutil.disk_usage(path).free


def full_disk_error(path: Path, exc: BaseException) -> OSError | None:
    """An ``OSError(ENOSPC)`` naming the output ``path`` when writing it failed for want of disk space, else None.

    Plain writes fail with ENOSPC but often without a file name; other writers raise their own
    exception types, recognised here by the disk being nearly full when they failed. Either way the
    user gets one line naming the output and the free space, and knows the old output is intact.
    """
    from .errors import MotionpropError

    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit, MotionpropError)):
        return None
    try:
        free = free_bytes(path.parent)
    except OSError:
        return None
    out_of_space = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    serializer_on_full_disk = not isinstance(exc, OSError) and free < NEARLY_FULL_BYTES
    if not (out_of_space or serializer_on_full_disk):
        return None
    return OSError(errno.ENOSPC, f"No space left on device ({free / 2**20:.0f} MB free; the output was not "
                                 "written, an older one stays as it was)", str(path))


@functools.lru_cache(maxsize=1)
def host_tag() -> str:
    """8 hex digits naming this machine in temporary names (a hash: host names may hold any character)."""
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_prefix(name: str, kind: str = "new", pid: int | None = None) -> str:
    """The start of a temporary name for target ``name``, written by ``pid`` (default: this process).

    ``kind`` is ``"new"`` for what is being written, ``"old"`` for a folder moved
    aside while it is replaced; mkstemp/mkdtemp append 8 random characters.
    """
    if kind not in ("new", "old"):
        raise ValueError(f"kind must be 'new' or 'old', got {kind!r}")
    return f".{name}.tmp{os.getpid() if pid is None else pid}-{host_tag()}-{kind}-"


# mkstemp's random part: 8 of "a-z0-9_"; anything after it is the target's suffix.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+?)\.tmp(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-(?P<kind>new|old)-[a-z0-9_]{8}")


def _process_exists(pid: int) -> bool:
    """Whether process ``pid`` exists on this host; True when unsure (never delete what may be in use).

    Signal 0 checks without signalling. On Windows os.kill would terminate the
    process, so there every process counts as alive.
    """
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False,
                             target: str | None = None) -> list[Path]:
    """Delete the temporaries in ``folder`` that a dead process of this host left; return what was removed.

    A temporary counts as stale when its name (see the module docstring) holds
    this host's tag and the PID of no running process. Temporaries of live
    processes and of other hosts are kept, so a command may call this at its
    start while other processes write into the same folder. A PID reused by an
    unrelated process only keeps a stale name longer. A stale ``old`` folder
    whose target is missing (killed between the two renames of a replacement)
    is renamed back onto the target instead: it is the only complete copy.
    ``recursive`` also searches sub-folders (not inside temporary folders);
    ``target`` keeps to the temporaries of that one name.
    """
    candidates = []
    for parent, dirs, names in os.walk(folder):
        for name in [*dirs, *names]:
            match = _TEMP_NAME.match(name)
            if match and match["host"] == host_tag() and target in (None, match["target"]):
                candidates.append((Path(parent) / name, match))
        dirs[:] = [d for d in dirs if recursive and not _TEMP_NAME.match(d)]
    removed = []  # every name was listed before any PID is checked: a temporary made later is never seen
    for path, match in candidates:
        if _process_exists(int(match["pid"])):
            continue
        target = path.parent / match["target"]
        with contextlib.suppress(FileNotFoundError):
            if match["kind"] == "old" and path.is_dir() and not os.path.lexists(target):
                os.replace(path, target)
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def _default_permissions(path: Path, mode: int) -> None:
    """Give a temporary file or folder the permissions a plain open() or mkdir() would (mkstemp's are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    if path.exists():
        path.chmod(mode & ~umask & (stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO))


def read_json(path: str | os.PathLike, what: str) -> object:
    """The parsed JSON of ``path``; a missing or malformed file is an InputError naming it (``what``: e.g. 'batch file')."""
    import json

    from .errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to be a {what}") from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file: the same resolved path, or (both existing) the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (after resolving links)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_outputs(outputs: "list[tuple[str, str | os.PathLike | None]]",
                  inputs: "list[tuple[str, str | os.PathLike | None]]" = ()) -> None:
    """Refuse an output path that is one of the inputs or another output of the same call.

    ``outputs`` and ``inputs`` are (option, path) pairs; unset (None) paths are
    skipped. The error names both options, before anything is read or written.
    """
    from .errors import InputError

    seen: list[tuple[str, str | os.PathLike]] = []
    for option, path in outputs:
        if path is None or path == "":
            continue
        if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
            raise InputError(f"{option} {path} is not a regular file (a device or pipe): refusing to replace it")
        parent = Path(os.path.abspath(path)).parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"{option} {path}: {parent} is a file, not a folder")
        for in_option, in_path in inputs:
            if in_path is not None and in_path != "" and same_file(path, in_path):
                raise InputError(f"{option} {path} is the input {in_option}: refusing to overwrite an input")
        for other_option, other in seen:
            if same_file(path, other):
                raise InputError(f"{option} {path} is also {other_option}: give each output its own file")
        seen.append((option, path))
