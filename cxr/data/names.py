"""Image names are names, never paths.

Every image id read from a table (VinBigData's image_id, NIH's Image Index,
a COCO file_name) becomes a file name under the output folder and an entry
of the image lists, so it is checked once, where it is read: no path
separator (so no absolute path), no leading `.` (no `..` step, no hidden
file), no control or line-separator character (a newline would split a
list), not empty. The offending table line is named.
"""

import unicodedata

from cxr.run.errors import UserError

SEPARATORS = ("/", "\\")


def name_problem(name):
    """Why `name` cannot be an image's file name, or None if it can."""
    if not name:
        return "it is empty"
    if name.startswith("."):
        return "it starts with '.' (a hidden file, or a step up with '..')"
    if any(separator in name for separator in SEPARATORS):
        return "it holds a path separator (an image id must be a bare file name)"
    if name.isascii() and name.isprintable():  # the common case, without a scan
        return None
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        return f"it holds the control character {bad[0]!r}"
    return None


def check_name(name, where):
    """Raise a UserError naming `where` (a file and line) unless `name` is a bare file name."""
    problem = name_problem(name)
    if problem:
        raise UserError(f"{where}: the image name {name!r} cannot be used: {problem}")
    return name
