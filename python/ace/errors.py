"""The one exception type of the package's native layer."""


class ACEError(ValueError):
    """Bad input or a failure inside the ACE core; the message names the problem."""
