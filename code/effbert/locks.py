"""One writer per folder: an exclusive lock held while a stage writes there.

Two pretraining processes on one model folder would log every record twice and set each other's live
checkpoints aside. A stage that writes a folder therefore holds an advisory lock on a file in it
(fcntl.flock, exclusive, non-blocking): a second writer stops at once, naming the holder (host, pid,
start time, command, as the holder wrote them into the lock file). The kernel releases the lock when
its holder ends in any way (kill -9 included), so a lock left by a killed process is simply taken over
by the next run; the file itself stays and only says who held it last. On a filesystem without flock
support the stage goes on with a warning: one writer is then not enforced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from effbert.errors import InputError
from effbert.files import remove_leftovers

LOCK_FILE = ".effbert.lock"
F = TypeVar("F", bound=Callable[..., object])


def _holder(path: Path) -> str:
    try:
        found = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        found = {}
    if not found:
        return "holder unknown"
    return (f"pid {found.get('pid')} on {found.get('host')}, started {found.get('started')}: "
            f"{found.get('command', '')}").rstrip(": ")


def output_lock(out: str | Path, what: str) -> contextlib.AbstractContextManager[None]:
    """The writer lock of an output folder that is replaced whole (documents, shards): a file beside it."""
    out = Path(out)
    return writer_lock(out, what, lock_file=out.parent / f".{out.name}.lock")


def locks_output(what: str, parameter: str = "out_dir") -> Callable[[F], F]:
    """Decorate a stage function so that it runs holding the output lock of its `parameter` folder, after
    removing what a killed run of it left half-built beside it."""

    def decorate(stage: F) -> F:
        signature = inspect.signature(stage)

        @functools.wraps(stage)
        def locked(*args: object, **kwargs: object) -> object:
            out = Path(signature.bind(*args, **kwargs).arguments[parameter])
            with output_lock(out, what):
                remove_leftovers(out.parent, of=out.name)  # a killed run's half-built output (can be GBs)
                return stage(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate


@contextlib.contextmanager
def writer_lock(folder: str | Path, what: str, lock_file: Path | None = None) -> Iterator[None]:
    """Hold `folder`'s writer lock for the block (the file `lock_file`, by default LOCK_FILE inside the folder);
    `what` names the stage in the refusal."""
    folder = Path(folder)
    path = lock_file or folder / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{folder}: another {what} is writing here ({_holder(path)}); let it finish or stop "
                             "it first") from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            print(f"warning: {folder}: this filesystem has no file locks; one writer at a time is not enforced",
                  file=sys.stderr)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
