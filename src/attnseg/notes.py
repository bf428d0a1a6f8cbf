"""`Note`: a warning for the person running attnseg (an image with extra pages, a cache that could not be
written or was found damaged). The command line prints each as one line, `note: ...`; a Python caller gets it
through the warnings module as usual."""
from __future__ import annotations

import sys
import warnings


class Note(UserWarning):
    pass


def print_notes_as_lines() -> None:
    """Show `Note`s as one line on stderr (no file name, line or source); other warnings as Python shows them."""
    shown = warnings.showwarning
    if getattr(shown, "attnseg_notes", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(category, type) and issubclass(category, Note):
            print(f"note: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show.attnseg_notes = True
    warnings.showwarning = show
