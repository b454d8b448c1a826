"""User-facing errors.

Anything the user can fix (a wrong name, a missing file, a library that is not installed) is
raised as a `VggDeployError`: the CLI prints its message as one line and exits with its
`exit_code`. Bugs are any other exception and keep their traceback.
"""

from __future__ import annotations


class VggDeployError(Exception):
    """An error the user can fix; its message names the problem and the fix."""

    exit_code = 1


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
