"""User-facing errors: one line on stderr and a non-zero exit, never a traceback."""

import sys
from contextlib import contextmanager


class UserError(Exception):
    """Bad input the user can fix; its message says what is wrong and what to do."""


class Interrupted(Exception):
    """A run stopped by a signal after saving what resumes it; exits as the signal would have (128 + its number)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


EXIT_USER_ERROR = 2


def check_fraction(value: float, what: str) -> float:
    """A strength or a weight: from 0 to 1, or a UserError."""
    if not 0 <= value <= 1:
        raise UserError(f"{what} must be between 0 and 1, got {value}")
    return value


@contextmanager
def exit_on_user_error():
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(128 + e.signum)
