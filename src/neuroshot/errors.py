"""User-facing errors: one clear line, no traceback, non-zero exit from the CLI."""


class NeuroshotError(Exception):
    """Bad input or configuration that the user can fix; the message says how."""


class UnsupportedModelError(NeuroshotError):
    """The model has no feed-forward layers that neuroshot knows how to read."""


class ContextOverflowError(NeuroshotError):
    """The prompt without the query text (instruction and demonstrations) fills the model's context."""
