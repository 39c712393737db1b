"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class SgtlabError(Exception):
    """Bad input or an impossible request, explained in the message."""


class DataError(SgtlabError):
    """A data set is missing, corrupt or malformed."""


class CheckpointError(SgtlabError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class TrainingDiverged(SgtlabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class SgtlabWarning(UserWarning):
    """Something asked for that sgtlab did without (e.g. CUDA graphs on a CPU); the command line
    prints it as one line, `sgtlab: warning: ...`."""
