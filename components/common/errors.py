"""Error types that carry a message a user can act on."""


class KfpCtError(Exception):
    """Base class: the message names the file / column / value at fault."""


class InputDataError(KfpCtError):
    """The input data is missing, empty or malformed."""


class ProblemSpecError(KfpCtError):
    """The problem definition (spec or user module) is unusable."""


class SchemaError(KfpCtError):
    """A schema file does not parse or does not fit the data."""


class RegistryError(KfpCtError):
    """The push destination holds something unexpected (corrupt or unreadable version)."""


class StorageError(KfpCtError):
    """A path cannot be read or written (missing, not writable, bad URI)."""
