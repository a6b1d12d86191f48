"""The one exception type that users can cause.

Every error a user can trigger (a bad file, a wrong angle count, NaNs, a parameter outside what a
model was trained for) raises :class:`TiltgenError` with a message that says what is wrong and what
to do. The CLI prints it as one line and exits non-zero; the widgets show it as a napari
notification. Programming errors stay ordinary Python exceptions.
"""

from __future__ import annotations

import os


class TiltgenError(Exception):
    """A problem with the user's input or settings, with a message meant for the user.

    Parameters
    ----------
    message
        What is wrong and what to do about it.
    path
        The file concerned, if any; it is put in front of the message.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class Cancelled(Exception):
    """Raised inside long work when the user asked it to stop."""
