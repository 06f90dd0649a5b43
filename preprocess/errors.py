"""Errors raised by the preprocessing stage."""

from __future__ import annotations


class PreprocessError(ValueError):
    """Bad input or bad settings for the preprocessing stage.

    The message always names what is wrong and where: the file, the line (1-based, where there is
    one), the column or the schema key.  ``file`` / ``line`` / ``reason`` are also kept as
    attributes so callers (the CLI, tests) can inspect them.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 reason: str | None = None) -> None:
        where = ""
        if file is not None:
            where = f"{file}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.file = file
        self.line = line
        self.reason = reason


# Reasons a row can be rejected (keys of ``summary["rows_rejected"]``).
BAD_COLUMN_COUNT = "column_count"
BAD_LABEL = "label"
BAD_NUMBER = "non_numeric"
BAD_REASONS = (BAD_COLUMN_COUNT, BAD_LABEL, BAD_NUMBER)
