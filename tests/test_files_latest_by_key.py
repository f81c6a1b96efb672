"""rkd_pml.files.records: the last record per key, and files whose cut lines were ended by a newline."""

import pytest

from rkd_pml.files.records import append_jsonl, latest_by_key, read_jsonl


def test_last_record_of_each_key_wins_and_a_missing_file_is_empty(tmp_path):
    path = tmp_path / "records.jsonl"
    assert latest_by_key(path) == {}
    for record in ({"key": "a", "v": 1}, {"key": "b", "v": 2}, {"note": "no key"}, {"key": "a", "v": 3}):
        append_jsonl(path, record)
    assert latest_by_key(path) == {"a": {"key": "a", "v": 3}, "b": {"key": "b", "v": 2}}
    assert list(latest_by_key(path)) == ["a", "b"]
    assert latest_by_key(path, key="note") == {"no key": {"note": "no key"}}


def test_a_cut_line_ended_by_a_newline_is_skipped_only_when_asked(tmp_path):
    # what an appender that completes a cut line with a newline leaves after a crash
    path = tmp_path / "records.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v"\n{"key": "c", "v": 3}\n[1, 2]\n{"key": "a", "v": 4}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)
    assert [r["key"] for r in read_jsonl(path, skip_damaged=True)] == ["a", "c", "a"]
    assert latest_by_key(path, skip_damaged=True) == {"a": {"key": "a", "v": 4}, "c": {"key": "c", "v": 3}}
    with pytest.raises(ValueError, match="line 2"):
        latest_by_key(path)
