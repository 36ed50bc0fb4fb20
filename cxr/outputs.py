"""Writing outputs so that nothing is lost: atomic files, staged folders.

- `atomic_path`, and on it `atomic_write_text` / `atomic_write_json` (and
  `cxr.checkpoint_io.atomic_torch_save`; this module never imports torch, so that
  prepare stays light): write to a temp file in the same folder, then
  `os.replace`, so a reader never sees half a file; a failed write (a full
  disk) removes its temp file and leaves the previous file as it was.
- `staged_directory`: build a whole output folder under a temporary name and
  rename it into place only when complete; an existing folder is refused
  unless `replace=True`, and is only removed after the new one is finished.
- Nothing a user owns is deleted: every folder cxr builds carries a marker
  file, `.cxr-output`, and `check_output_folder` lets --replace remove only a
  folder that has it; an output folder that contains an input is refused.
  Folders are created with the user's umask, like any other.
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path` to write to; rename it onto `path` when
    the block ends without an exception, and delete it when one is raised.

    The temp name carries the process id, so two processes never share one, and
    it is created with the usual permissions (umask), unlike a mkstemp file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path, obj, indent=None):
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


MARKER = ".cxr-output"


def _contains(folder, path):
    folder, path = Path(folder).resolve(), Path(path).resolve()
    return path == folder or folder in path.parents


def _holds_something(path):
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def check_output_folder(path, replace, inputs=(), flag="--replace"):
    """Refuse an output folder that contains one of `inputs`, an existing,
    non-empty one unless `replace`, and, even with `replace`, one that cxr did
    not make (no MARKER file in it): replacing it would delete the user's files."""
    path = Path(path)
    for source in inputs:
        if _contains(path, source):
            raise UserError(
                f"output folder {path} contains the input {source}; choose an output folder "
                "outside the inputs (replacing it would delete them)"
            )
    if not _holds_something(path):
        return
    if not replace:
        refuse_existing(path, replace, flag)
    if not (path / MARKER).is_file():
        raise UserError(
            f"{path} was not made by cxr (it has no {MARKER} file), so {flag} will not delete it; "
            "move it away or choose another output folder"
        )


def make_folder(path):
    """mkdir -p with the user's umask, a clear message if impossible."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocking = next(
            (p for p in [Path(path), *Path(path).parents] if p.exists() and not p.is_dir()), None
        )
        why = f"{blocking} is a file" if blocking else error.strerror or str(error)
        raise UserError(f"cannot create the folder {path}: {why}") from None


def mark_as_ours(folder, command):
    """Write the MARKER file that lets a later --replace delete `folder`."""
    atomic_write_text(
        Path(folder) / MARKER, f"made by {command}; --replace may delete this folder\n"
    )


def _user_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def refuse_existing(path, replace, flag="--replace"):
    """Raise a UserError if `path` exists and replacing it was not asked for."""
    path = Path(path)
    if path.exists() and not replace:
        kind = "folder" if path.is_dir() else "file"
        raise UserError(
            f"output {kind} {path} already exists; pass {flag} to overwrite it "
            f"or choose another {kind}"
        )


@contextlib.contextmanager
def staged_directory(final, replace=False, inputs=(), command="cxr"):
    """Yield a fresh temporary folder beside `final`; move it to `final` on success.

    `final` is checked first (`check_output_folder`). On an exception the
    temporary folder is deleted and `final` is untouched. The finished
    folder carries the MARKER file and the permissions of the user's umask.
    """
    final = Path(final)
    check_output_folder(final, replace, inputs)
    make_folder(final.parent)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))
    os.chmod(staging, 0o777 & ~_user_umask())  # mkdtemp makes it private (0700)
    try:
        yield staging
        mark_as_ours(staging, command)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        retired = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        os.replace(final, retired / final.name)
        os.replace(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, final)
