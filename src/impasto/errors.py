"""User-facing errors: one line on stderr and a non-zero exit, never a traceback."""

import sys
from contextlib import contextmanager


class UserError(Exception):
    """Bad input the user can fix; its message says what is wrong and what to do."""


EXIT_USER_ERROR = 2


@contextmanager
def exit_on_user_error():
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
