"""User-facing errors.

Anything the user can fix (a wrong name, a missing file, a library that is not installed) is
raised as a `VggDeployError`: the CLI prints its message as one line and exits with its
`exit_code`. Bugs are any other exception and keep their traceback.
"""

from __future__ import annotations


class VggDeployError(Exception):
    """An error the user can fix; its message names the problem and the fix."""

    exit_code = 1
    #: how the CLI's one line starts ("error: ...")
    label = "error"


class UnknownModelError(VggDeployError):
    """A model name that is not in the zoo."""


class WeightsError(VggDeployError):
    """Weights that are missing, corrupt, or do not fit the model."""


class BundleError(VggDeployError):
    """A bundle directory or manifest that is missing, stale or tampered with."""


class InputError(VggDeployError):
    """Bad command-line values or input tensors (names, shapes, dtypes, sizes)."""


class RuntimeUnavailableError(VggDeployError):
    """A runtime, provider or device that cannot be used on this host."""


class CheckFailedError(VggDeployError):
    """A numerical or structural check ran and failed (parity, validation, precision)."""

    exit_code = 2


#: the exit status of a run that finished but left out unreadable images
SKIPPED_EXIT_CODE = 3


class InputsSkipped(VggDeployError):
    """The command finished, but left out inputs it could not read (each already reported on
    its own line); `--strict` stops at the first instead. The CLI prints the message as a
    warning, not an error, and exits with `SKIPPED_EXIT_CODE`."""

    exit_code = SKIPPED_EXIT_CODE
    label = "warning"


#: OS errors the user fixes (space, permissions, names); any other OSError is a bug
_OS_FIXES = {
    "ENOSPC": "free some space or choose another place",
    "EDQUOT": "free some space or choose another place",
    "EROFS": "choose a writable place",
    "EACCES": "choose a place you may write to, or fix its permissions",
    "EPERM": "choose a place you may write to, or fix its permissions",
    "ENAMETOOLONG": "choose a shorter name or path",
}


def os_error_message(exc: OSError, path: object = None, doing: str = "use") -> str | None:
    """One line for an OS error the user can fix (`cannot write X (No space left on device):
    free some space...`), or None when the error is not one of those. `doing`: what failed
    ("write"; "use" when the caller cannot tell)."""
    import errno

    name = errno.errorcode.get(exc.errno or -1, "")
    if name not in _OS_FIXES:
        return None
    where = path if path is not None else (exc.filename or "a file")
    return f"cannot {doing} {where} ({exc.strerror or name}): {_OS_FIXES[name]}"
