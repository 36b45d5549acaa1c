"""Sentence-pair files: ``source<TAB>target[<TAB>anything]`` lines (the Tatoeba/Anki format of
the PyTorch translation tutorial's ``eng-fra.txt``) or the same as CSV.

Each line is decoded on its own, so one line of invalid UTF-8 costs that line only. A line with
too few columns, an empty source or target (after whitespace is collapsed), invalid UTF-8 or
nothing at all is a bad line: it is skipped, counted and named by number with its reason, never
a crash. The CSV dialect is Python's (quoted fields, no field spanning lines).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from glimpse.errors import DataError, MissingFileError

#: Bad lines named one by one in messages; the rest are counted.
NAMED_BAD_LINES = 10


@dataclass(frozen=True)
class BadLine:
    """A skipped line: its 1-based number and why."""

    number: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.number} ({self.reason})"


@dataclass
class SentencePairFile:
    """What a file held: its ``(source, target)`` pairs in file order, and the bad lines."""

    path: Path
    pairs: list[tuple[str, str]] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)

    def describe_bad_lines(self) -> str:
        """``"3 bad lines skipped: line 2 (empty target), ..."`` naming the first
        :data:`NAMED_BAD_LINES`."""
        named = ", ".join(str(bad) for bad in self.bad_lines[:NAMED_BAD_LINES])
        more = len(self.bad_lines) - NAMED_BAD_LINES
        extra = f" and {more} more" if more > 0 else ""
        count = len(self.bad_lines)
        return f"{count} bad line{'s' * (count != 1)} skipped: {named}{extra}"


def _collapse(text: str) -> str:
    return " ".join(text.split())


def delimiter_for(path: Path, delimiter: str | None) -> str:
    """``delimiter``, or by the file's suffix: ``,`` for ``.csv``, a tab otherwise."""
    if delimiter is not None:
        if len(delimiter) != 1:
            raise DataError(f"data.delimiter={delimiter!r} must be one character (or null).")
        return delimiter
    return "," if path.suffix.lower() == ".csv" else "\t"


def read_sentence_pairs(
    path: str | Path,
    source_column: int = 0,
    target_column: int = 1,
    delimiter: str | None = None,
    header: bool = False,
) -> SentencePairFile:
    """Read ``path``'s pairs (columns counted from 0; ``header`` skips the first line).

    Raises :class:`MissingFileError` for a missing file and :class:`DataError` when no line
    holds a usable pair.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"Sentence-pair file {path} does not exist; set data.path to a TSV or CSV of "
            "source<TAB>target lines."
        )
    if min(source_column, target_column) < 0 or source_column == target_column:
        raise DataError(
            f"data.source_column={source_column} and data.target_column={target_column} must be "
            "two different columns counted from 0."
        )
    separator = delimiter_for(path, delimiter)
    needed = max(source_column, target_column) + 1
    result = SentencePairFile(path)
    lines = path.read_bytes().split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the newline that ends the last line
    for number, raw in enumerate(lines, start=1):
        if header and number == 1:
            continue
        try:
            text = raw.decode("utf-8").removeprefix("\ufeff").rstrip("\r")
        except UnicodeDecodeError as error:
            result.bad_lines.append(BadLine(number, f"not valid UTF-8 at byte {error.start}"))
            continue
        if not text.strip():
            result.bad_lines.append(BadLine(number, "blank"))
            continue
        if separator == ",":
            columns = next(csv.reader([text]))
        else:
            columns = text.split(separator)
        if len(columns) < needed:
            result.bad_lines.append(
                BadLine(
                    number, f"{len(columns)} column{'s' * (len(columns) != 1)}, {needed} needed"
                )
            )
            continue
        source, target = _collapse(columns[source_column]), _collapse(columns[target_column])
        if not source or not target:
            result.bad_lines.append(
                BadLine(number, "empty source" if not source else "empty target")
            )
            continue
        result.pairs.append((source, target))
    if not result.pairs:
        bad = f"; {result.describe_bad_lines()}" if result.bad_lines else ""
        raise DataError(
            f"{path} holds no sentence pairs (source and target in columns {source_column} and "
            f"{target_column}, separated by {separator!r}){bad}."
        )
    return result


__all__ = ["BadLine", "SentencePairFile", "delimiter_for", "read_sentence_pairs"]
