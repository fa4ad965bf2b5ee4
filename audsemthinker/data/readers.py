"""Reading source tables (CSV, JSON lines) so that one bad line is one counted row, never a crash.

Every builder that reads a CSV or JSONL *source* goes through :func:`read_csv` /
:func:`iter_json_lines`. Each yields ``(row number, value)`` where the value is the parsed row
or a :class:`RowError` saying what is wrong with that line
(``not_utf8``, ``malformed_json``, ``malformed_row``, ``cell_too_large``), so the builder skips
and counts it under its own id and goes on. What is handled:

- a UTF-8 byte-order mark (Excel writes one): it would otherwise become part of the first
  column's name, so ``id`` turns into ``\\ufeffid`` and every row loses its id;
- bytes that are not UTF-8, on one line (JSONL) or in one record's cells (CSV);
- JSON nested deeply enough to exhaust the parser's recursion limit;
- a CSV cell over the ``csv`` module's field limit (131072 characters), which raises
  ``_csv.Error`` and ends the iteration;
- a CSV record with more or fewer cells than the header (a lost delimiter shifts every later
  column: the row would be read with its fields under the wrong names).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class RowError(ValueError):
    """An item that cannot become a row; ``reason`` is what the build report counts."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


CSV_CELL_LIMIT = 131072
"""Longest CSV cell accepted, in characters (the ``csv`` module's own default limit)."""

_PARSE_LIMIT = 2**31 - 1  # the reader parses any cell; the check above decides


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def read_csv(path: str | Path, cell_limit: int = CSV_CELL_LIMIT
             ) -> tuple[list[str], Iterator[tuple[int, dict | RowError]]]:
    """The header of a CSV and an iterator of ``(row number, {column: cell} or RowError)``.

    Row numbers count the header as row 1 (the first record is 2), whatever newlines quoted
    cells hold, so a row's number is stable and names it in a report.

    Args:
        path: the CSV file (UTF-8, with or without a byte-order mark).
        cell_limit: longest cell accepted; a longer one makes its row a ``cell_too_large``.

    Returns:
        ``(columns, rows)``; ``rows`` is a generator (the file stays open until it finishes).

    Raises:
        ValueError: the header itself is unreadable (empty file, not UTF-8, repeated or
            empty column names): a whole-file problem, not one row's.
    """
    path = Path(path)
    f = open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")
    reader = csv.reader(f)
    try:
        header = _next_record(reader)
    except (StopIteration, csv.Error) as e:
        f.close()
        raise ValueError(f"{path}: no readable CSV header ({e or 'empty file'})") from None
    columns = [c.strip() for c in header]
    problem = ("is not UTF-8" if any(map(_has_surrogates, columns)) else
               "has an empty column name" if "" in columns else
               "repeats a column name" if len(set(columns)) < len(columns) else None)
    if problem:
        f.close()
        raise ValueError(f"{path}: the CSV header {problem}: {columns!r}"[:400])

    def rows() -> Iterator[tuple[int, dict | RowError]]:
        with f:
            n = 1
            while True:
                n += 1
                try:
                    cells = _next_record(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    yield n, RowError("malformed_row", f"{path.name}: {e}")
                    continue
                if not cells:  # a blank line between records
                    n -= 1
                    continue
                yield n, _csv_row(cells, columns, cell_limit)

    return columns, rows()


def _next_record(reader) -> list[str]:
    old = csv.field_size_limit(_PARSE_LIMIT)
    try:
        return next(reader)
    finally:
        csv.field_size_limit(old)


def _csv_row(cells: list[str], columns: list[str], cell_limit: int) -> dict | RowError:
    if len(cells) != len(columns):
        return RowError("malformed_row", f"{len(cells)} cells, the header has {len(columns)}")
    big = [c for c, v in zip(columns, cells) if len(v) > cell_limit]
    if big:
        return RowError("cell_too_large", f"column {big[0]!r} over {cell_limit} characters")
    bad = [c for c, v in zip(columns, cells) if _has_surrogates(v)]
    if bad:
        return RowError("not_utf8", f"column {bad[0]!r} holds bytes that are not UTF-8")
    return dict(zip(columns, cells))


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any | RowError]]:
    """``(line number, parsed value or RowError)`` for each non-blank line of a JSONL source.

    A line that is not UTF-8 is ``not_utf8``; one that does not parse, or nests deeper than the
    parser's recursion limit, is ``malformed_json``. A byte-order mark on the first line is
    dropped.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, RowError("not_utf8", f"line {n}: byte {e.start} is not UTF-8")
                continue
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                yield n, RowError("malformed_json", f"line {n}: {e.msg} at column {e.colno}")
            except RecursionError:
                yield n, RowError("malformed_json", f"line {n}: nested too deeply")
