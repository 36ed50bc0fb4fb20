"""The one gate for everything cxr writes; every command writes through it.

- Nothing of the user's is lost: cxr writes only into folders it made (they
  carry MARKER) or empty ones, never into a folder of the user's; it replaces
  or deletes a file of an earlier run only when --replace says so.
- One writer per folder: a folder is locked while it is written (LOCK names
  the writer's process); a second writer is refused naming it, and the lock
  of a process that died is released by the system, so the next one proceeds.
- Nothing outside the output: every path written is checked to lie inside its
  folder (`OutputFolder.inside`); besides it only the temporary names of a
  folder being built (`staged_directory`) are made, and removed.
- Never half-written: files go to a temp name and are renamed (`atomic_path`);
  a full disk ends in one `disk full` line with the previous file or folder as
  it was; an interrupted writer's temp names are removed by the next one.
Needs no torch, so that prepare stays light.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from cxr.run.errors import UserError

MARKER = ".cxr-output"
LOCK = ".cxr-lock"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFull(UserError):
    """A write ran out of space (or over a file-size limit)."""


def disk_full(error, what):
    return DiskFull(f"disk full while writing {what} ({error.strerror}); nothing was replaced")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path` to write to; rename it onto `path` when the block
    ends without an exception, else delete it. The temp name carries the process id
    (two processes never share one) and gets the usual permissions (umask)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if error.errno in DISK_FULL:
            raise disk_full(error, path) from None
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        file.write(data)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def now_iso():
    """The local time with its zone, ISO 8601: 2026-12-07T02:30:05+01:00."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def atomic_write_json(path, obj, indent=None):
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")  # JSON only


def _contains(folder, path):
    folder, path = Path(folder).resolve(), Path(path).resolve()
    return path == folder or folder in path.parents


def check_inputs_outside(out, inputs):
    """Refuse an output folder that contains one of the inputs, or lies inside one."""
    for source in inputs:
        if source and _contains(out, source):
            raise UserError(
                f"output folder {out} contains the input {source}; choose an output folder "
                "outside the inputs (replacing it would delete them)"
            )
        if source and Path(source).is_dir() and _contains(source, out):
            raise UserError(
                f"output folder {out} is inside the input {source}; choose one outside it "
                "(replacing or re-preparing the input would delete the outputs)"
            )


def followed(path):
    """An output path whose last part is a symbolic link, followed to the folder it
    names: cxr writes into (and replaces) the target, never the link itself."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def is_ours(folder):
    return (Path(folder) / MARKER).is_file()


def mark_as_ours(folder, command):
    """Write the MARKER file: cxr made `folder`, and --replace may remove what it wrote."""
    atomic_write_text(Path(folder) / MARKER, f"made by {command}\n")


def make_folder(path, command="cxr"):
    """mkdir -p with the user's umask, marking every folder it creates; one clear line
    if that is impossible."""
    path = Path(path)
    missing = [p for p in [path, *path.parents] if not p.exists()][::-1]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocking = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocking} is a file" if blocking else error.strerror or str(error)
        raise UserError(f"cannot create the folder {path}: {why}") from None
    for folder in missing:
        mark_as_ours(folder, command)


def _holds_something(path):
    """A file, or a folder holding anything but cxr's own MARKER and LOCK."""
    if not path.exists():
        return False
    return not path.is_dir() or any(p.name not in (MARKER, LOCK) for p in path.iterdir())


def refuse_existing(path, replace, flag="--replace"):
    """Raise a UserError if `path` exists and replacing it was not asked for."""
    path = Path(path)
    if path.exists() and not replace:
        kind = "folder" if path.is_dir() else "file"
        raise UserError(
            f"output {kind} {path} already exists; pass {flag} to overwrite it "
            f"or choose another {kind}"
        )


def check_output_folder(path, replace, inputs=(), flag="--replace"):
    """Refuse an output folder that contains an input, an existing non-empty one
    unless `replace`, and, even with `replace`, one that cxr did not make."""
    path = Path(path)
    check_inputs_outside(path, inputs)
    if not _holds_something(path):
        return
    refuse_existing(path, replace, flag)
    if not is_ours(path):
        raise UserError(
            f"{path} was not made by cxr (it has no {MARKER} file), so {flag} will not delete it; "
            "move it away or choose another output folder"
        )


def refuse_unmarked(path):
    """A folder of the user's (not empty, no MARKER) is never written into."""
    path = Path(path)
    if _holds_something(path) and not is_ours(path):
        raise UserError(
            f"{path} holds files and was not made by cxr (it has no {MARKER} file), so cxr will "
            "not write into it; choose another output folder or name"
        )


class Lock:
    """An exclusive lock of `folder` for one writer (a LOCK file in it, naming the
    holder); the system releases it when the holder's process ends, whatever the
    way, so a lock left by a dead process is simply taken. With shared_with_parent,
    a command that its holder started (the experiment's report stage) writes under
    the holder's lock; any other command is refused."""

    def __init__(self, folder, *, shared_with_parent=False):
        self.path = Path(folder) / LOCK
        while True:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder()
                os.close(self.fd)
                if shared_with_parent and holder.startswith(self._record_head(os.getppid())):
                    self.fd = None  # the parent's lock covers this command
                    return
                raise UserError(
                    f"{folder} is being written by {holder}; wait for it to finish, or choose "
                    "another output"
                ) from None
            if self._still_there():
                break
            os.close(self.fd)  # the folder was replaced meanwhile: lock the one there now
        record = f"{self._record_head(os.getpid())} (since {now_iso()})\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, record.encode(), 0)

    @staticmethod
    def _record_head(pid):
        return f"process {pid} on {socket.gethostname()}"

    def _holder(self):
        """The holder's record, which it writes just after taking the lock: a writer
        that lost the race by microseconds waits a moment for it."""
        for _ in range(50):
            record = os.pread(self.fd, 500, 0).decode(errors="replace").strip()
            if record:
                return record
            time.sleep(0.02)
        return "another process"

    def _still_there(self):
        try:
            return os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return False

    def release(self):
        """Remove the LOCK file (if it is still ours) and release the lock; a writer
        that opened the file meanwhile finds it gone (`_still_there`) and retries."""
        if self.fd is None:
            return
        if self._still_there():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)  # closing the descriptor releases the lock
        self.fd = None


class OutputFolder:
    """A folder cxr writes into: every file goes through `inside` (checked to lie in
    the folder) and is written atomically."""

    def __init__(self, path):
        self.path = Path(path)

    def inside(self, name):
        path = self.path / name
        if not _contains(self.path, path) or path.resolve() == self.path.resolve():
            raise UserError(f"{name!r} would be written outside {self.path}; refused")
        return path

    def write_bytes(self, name, data):
        """`data` to the file `name` in the folder: a temp file renamed over it."""
        with atomic_path(self.inside(name)) as tmp, open(tmp, "wb") as file:
            file.write(data)

    def write_text(self, name, text):
        self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name, obj, indent=None):
        atomic_write_json(self.inside(name), obj, indent)

    def append_text(self, name, text):
        try:
            with open(self.inside(name), "a", encoding="utf-8") as file:
                file.write(text)
        except OSError as error:
            if error.errno in DISK_FULL:
                raise disk_full(error, self.path / name) from None
            raise

    def remove(self, *names):
        """Delete files of the folder, each checked to lie in it before the first goes."""
        paths = [self.inside(name) for name in names]
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def leftover_temp_files(self):
        """Temp files (`atomic_path`'s .NAME.PID.tmp) of a writer that was killed."""
        return [p.name for p in self.path.glob(".*.tmp") if p.is_file()]


@contextlib.contextmanager
def open_output_folder(path, *, command, inputs=(), shared_with_parent=False):
    """The OutputFolder at `path`, created (and marked) if missing, refused if it is a
    folder of the user's or holds an input; locked for the block (or under the lock
    of the process that started this one, with shared_with_parent: `Lock`), and the
    temp files a killed writer left removed."""
    path = followed(path)
    check_inputs_outside(path, inputs)
    refuse_unmarked(path)
    make_folder(path, command)
    if not is_ours(path):
        mark_as_ours(path, command)  # an empty folder: ours now
    holder = Lock(path, shared_with_parent=shared_with_parent)
    try:
        folder = OutputFolder(path)
        for name in folder.leftover_temp_files() if holder.fd is not None else []:
            folder.remove(name)
        yield folder
    finally:
        holder.release()


def clear_folder(folder):
    """Delete everything in an OutputFolder but its MARKER and LOCK (--replace of a
    folder cxr made, which open_output_folder checked)."""
    assert is_ours(folder.path), f"{folder.path} is not cxr's"
    for child in folder.path.iterdir():
        if child.name in (MARKER, LOCK):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _user_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def staged_directory(final, replace=False, inputs=(), command="cxr"):
    """Yield a fresh temporary folder beside `final` (a link followed: `followed`); it
    becomes `final` on success.

    `final` is checked (`check_output_folder`), created if missing and locked
    for the block, so a second builder is refused; folders a killed builder
    left beside it (.NAME.staging-*) are removed. On an exception, a full disk
    included, the temporary folder goes and `final` is as it was."""
    final = followed(final)
    check_output_folder(final, replace, inputs)
    created = not final.exists()
    make_folder(final, command)
    lock = Lock(final)
    try:
        for leftover in final.parent.glob(f".{final.name}.staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))
        os.chmod(staging, 0o777 & ~_user_umask())  # mkdtemp makes it private (0700)
        try:
            yield staging
            mark_as_ours(staging, command)
            _install(staging, final)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                shutil.rmtree(final, ignore_errors=True)
            if isinstance(error, OSError) and error.errno in DISK_FULL:
                raise disk_full(error, final) from None
            raise
    finally:
        lock.release()


def _install(staging, final):
    """Swap the finished staging folder in for `final` (locked, checked at the start)."""
    retired = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-old-"))
    os.replace(final, retired / final.name)
    os.replace(staging, final)
    shutil.rmtree(retired, ignore_errors=True)
