"""User-facing errors: one clear message naming the file, row or flag.

Library code raises `UserError` for mistakes a user can fix (a bad CSV row, a
missing file, an existing output folder). Command-line entry points wrap their
`main` in `exit_on_user_error`, which prints the message without a traceback
and exits with status 2, and which turns SIGTERM into the unwinding Ctrl-C
gets; real bugs still raise with their full traceback.
"""

import signal
import sys


class UserError(Exception):
    """A mistake in the user's input or flags, with a message saying what to do; one
    line, whatever it quotes (a line break from a file is shown as \\n)."""

    def __init__(self, message):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


def first_few(items, shown=3):
    """'a; b; c; and 4 more': the first `shown` of the strings `items` a message names,
    then how many it leaves out."""
    more = f"; and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


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


class Terminated(KeyboardInterrupt):
    """SIGTERM (torchrun, a scheduler, kill): unwinds like Ctrl-C, so every temp file
    and half-built folder is removed on the way out."""


def _terminate(signum, frame):
    raise Terminated()


def exit_on_user_error(main, argv=None):
    """Run `main(argv)`: a UserError becomes `error: ...` on stderr and exit status 2;
    SIGTERM and Ctrl-C clean up and end with one line and 128 + the signal."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:
        name = "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"
        print(f"stopped by {name}; temporary files removed", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT))
