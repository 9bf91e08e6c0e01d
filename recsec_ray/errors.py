"""Errors users see as one line (the CLI prints ``str(err)`` and exits non-zero)."""


class RecsecError(Exception):
    """Base class: a problem the user can fix, with a message that says what and where."""


class ConfigError(RecsecError, ValueError):
    """A config value out of range or unknown; the message names the field and allowed values."""


class DataFileError(RecsecError):
    """A malformed or missing input file; the message names the file and line."""

    def __init__(self, path, problem: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem

    def __reduce__(self):  # Ray pickles a trial's error to the driver
        return type(self), (self.path, self.problem, self.line)


class ModelOutputError(RecsecError):
    """A model produced unusable output (e.g. non-finite scores)."""
