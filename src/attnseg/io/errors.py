"""How an error is said in one line."""
from __future__ import annotations

def first_line(e: BaseException) -> str:
    """An error's first non-empty line (its type's name if it has none): what a one-line report shows."""
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
