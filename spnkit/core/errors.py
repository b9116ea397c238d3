"""The one base class of mistakes a user can fix (a bad recipe, missing or damaged data, a
checkpoint that cannot be used, a broken plugin). The command line prints exactly these as
``error: ...`` lines with exit status 2; any other exception is a bug and keeps its traceback."""


class SpnkitError(Exception):
    """A problem the user can fix; ``lines`` are the ``error:`` lines to show (default: the
    message)."""

    @property
    def lines(self) -> list[str]:
        return str(self).splitlines() or [type(self).__name__]
