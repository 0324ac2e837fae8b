"""The one exception type that the command line turns into a one-line message and a non-zero exit.

Raise `JaxbertError` for anything a user can fix (a missing file, a config that cannot work); the message
names the problem and the fix. Anything else is a bug and keeps its traceback.
"""


class JaxbertError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
