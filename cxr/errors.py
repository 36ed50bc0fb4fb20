"""User-facing errors: one clear message naming the file, row or flag.

Library code raises `UserError` for mistakes a user can fix (a bad CSV row, a
missing file, an existing output folder). Command-line entry points wrap their
`main` in `exit_on_user_error`, which prints the message without a traceback
and exits with status 2; real bugs still raise with their full traceback.
"""

import sys


class UserError(Exception):
    """A mistake in the user's input or flags, with a message saying what to do."""


def user_message(error):
    """The message of a UserError. One raised in a DataLoader worker reaches the
    main process re-raised by torch with the worker's whole traceback as its
    message; the original message is the text after the last line's
    'UserError: '."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return last.split("UserError: ", 1)[-1]
    return text


def exit_on_user_error(main, argv=None):
    """Run `main(argv)`; turn a UserError into `error: ...` on stderr and exit 2."""
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        sys.exit(2)
