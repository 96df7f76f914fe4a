"""User-facing errors.

Anything a user can cause (a missing file, a bad option, a corrupt image) is raised as a
`LensforgeError`; the CLI prints its message as one line and exits non-zero, so a traceback
always means a bug in lensforge, never a mistake by the user.
"""


class LensforgeError(Exception):
    """An error caused by input or environment, reported to the user as one line."""

    exit_code = 1


class UsageError(LensforgeError):
    """Wrong options or missing paths given on the command line (exit code 2, like argparse)."""

    exit_code = 2


class DataError(LensforgeError):
    """A dataset or image file that is missing, unreadable or malformed."""


class CheckpointError(LensforgeError):
    """A weights file that is not a lensforge checkpoint, is corrupt, or is unsafe to load."""
