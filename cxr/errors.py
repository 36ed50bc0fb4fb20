"""User-facing errors: one clear message naming the file, row or flag.

Library code raises `UserError` for mistakes a user can fix (a bad CSV row, a
missing file, an existing output folder). Command-line entry points wrap their
`main` in `exit_on_user_error`, which prints the message without a traceback
and exits with status 2; real bugs still raise with their full traceback.
"""

import sys


class UserError(Exception):
    """A mistake in the user's input or flags, with a message saying what to do."""


def exit_on_user_error(main, argv=None):
    """Run `main(argv)`; turn a UserError into `error: ...` on stderr and exit 2."""
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
