"""Writing outputs so that nothing is lost: atomic files, staged folders.

- `atomic_path`, and on it `atomic_write_text` / `atomic_write_json` (and
  `cxr.engine.atomic_torch_save`; this module never imports torch, so that
  prepare stays light): write to a temp file in the same folder, then
  `os.replace`, so a reader never sees half a file; a failed write (a full
  disk) removes its temp file and leaves the previous file as it was.
- `staged_directory`: build a whole output folder under a temporary name and
  rename it into place only when complete; an existing folder is refused
  unless `replace=True`, and is only removed after the new one is finished.
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


def refuse_existing(path, replace, flag="--replace"):
    """Raise a UserError if `path` exists and replacing it was not asked for."""
    path = Path(path)
    if path.exists() and not replace:
        kind = "folder" if path.is_dir() else "file"
        raise UserError(f"output {kind} {path} already exists; pass {flag} to overwrite it "
                        f"or choose another {kind}")


@contextlib.contextmanager
def staged_directory(final, replace=False):
    """Yield a fresh temporary folder beside `final`; move it to `final` on success.

    On an exception the temporary folder is deleted and `final` is untouched.
    """
    final = Path(final)
    refuse_existing(final, replace)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))
    try:
        yield staging
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
