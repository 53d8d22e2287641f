"""metrics.jsonl survives an interrupted append."""

import json

import pytest

from map3d.engine.monitor import MetricsWriter, read_metrics


def test_torn_last_line_is_dropped_on_resume(tmp_path, caplog):
    writer = MetricsWriter(tmp_path)
    for step in (1, 2, 3):
        writer.write("train", step, {"loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 4, "lo')  # the disk filled up mid-append
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    writer.truncate_after(2)
    assert "torn last line" in caplog.text
    writer.write("train", 3, {"loss": 0.5})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_a_bad_line_inside_the_file_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"kind": "train", "step": 1}\n{oops\n{"kind": "train", "step": 2}\n'
    )
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(tmp_path / "metrics.jsonl")
