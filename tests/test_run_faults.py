"""Faults around a training run that must not stop it or the steps after it: a torn skip-log
line, a batch whose every row is skipped, half-written output folders and files."""

from __future__ import annotations

import json

from audsemthinker.data.collate import read_skip_log


def test_torn_skip_log_lines_are_counted_not_raised(tmp_path):
    log = tmp_path / "skipped_rows.jsonl"
    log.write_bytes(b'{"id": "a", "reason": "skipped:audio:truncated"}\n'
                    b'{"id": "b", "rea\n'  # a rank killed mid-write
                    b'\xff\xfe not utf-8\n'
                    b'[1, 2]\n'
                    b'{"id": "a", "reason": "skipped:audio:truncated"}\n'
                    b'{"id": "c", "reason": "skipped:overlong"}\n'
                    b'{"id": "d", "reason": "skipped:over')
    got = read_skip_log(log)
    assert got == {"rows": 2, "events": 3, "torn_lines": 4,
                   "by_reason": {"skipped:audio:truncated": 2, "skipped:overlong": 1}}
    json.dumps(got)  # lands in sft_report.json as is
