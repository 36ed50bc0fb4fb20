"""The reading boundary for JSON: every JSON file cxr reads is parsed here.

A file that cannot be read, is not JSON (empty, cut short, another format),
holds NaN or Infinity (not JSON, though Python writes them), or nests beyond
Python's recursion limit is one `UserError` naming the file and what was
expected; `json_object` then checks the top-level shape the same way. Each
reader of a kind of file (COCO files, image lists, model metadata, the
experiment record) checks its entries' types and ranges on top, naming the
entry. tests/run/test_reading.py walks the package so that no other module
parses a file's JSON itself.
"""

import json
from pathlib import Path

from cxr.run.errors import UserError

REQUIRED = object()  # read_json's default: the file must exist


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text, *, source, what):
    """The value of a JSON text, or one UserError naming `source` and `what` it should be."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise UserError(f"{source} is not valid JSON ({reason}); expected {what}") from None


def read_json(path, *, what, default=REQUIRED):
    """The value of the JSON file at `path`; `default` where there is none (if given)."""
    path = Path(path)
    if not path.is_file():
        if default is not REQUIRED:
            return default
        raise UserError(f"{path} not found; expected {what}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path} ({what}): {error}") from None
    return parse_json(text, source=path, what=what)


def read_json_lines(path, *, what):
    """The values of a JSON-lines file, one per non-empty line (errors name the line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path} ({what}): {error}") from None
    return [
        parse_json(line, source=f"{path}, line {number}", what=what)
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]


def type_name(value):
    names = {dict: "an object", list: "a list", str: "a string", bool: "true or false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else "a value")


def json_object(value, *, source, what, keys=()):
    """`value` if it is a JSON object holding every one of `keys`, else one UserError."""
    if not isinstance(value, dict):
        raise UserError(f"{source}: expected {what}, a JSON object; found {type_name(value)}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise UserError(f"{source}: expected {what}; it lacks {', '.join(map(repr, missing))}")
    return value
