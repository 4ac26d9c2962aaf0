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


class LabelError(InputDataError):
    """The label column cannot be learned from: a classification label with fewer than
    two classes (in the data or in the training split), or a label value that is empty,
    not a number (regression) or not finite."""


class TrainingError(KfpCtError):
    """Training ran but gave a model that must not be used (its loss or eval metrics are
    not finite numbers)."""
