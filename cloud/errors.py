"""One exception type for every failure a release engineer should read as one line."""


class KilnError(Exception):
    """A failure with a message that names the file, field or resource at fault.

    Tasks turn it into one line on stderr and a non-zero exit; nothing else is printed.
    """


class ConfigError(KilnError):
    """A setting in the Invoke config tree is missing, unknown or of the wrong type."""
