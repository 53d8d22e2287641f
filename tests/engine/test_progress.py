"""Progress of long loops: a bar in a terminal, log lines without one; logs do not collide."""

import io
import logging

import pytest

from map3d.cli import main
from map3d.engine import monitor
from map3d.engine.monitor import Progress, TqdmLoggingHandler


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_without_a_terminal_progress_is_logged(monkeypatch, caplog):
    monkeypatch.setattr(monitor, "LOG_EVERY_S", 0.0)
    caplog.set_level("INFO", logger="map3d.engine.monitor")
    assert list(Progress(range(4), desc="check x", unit="item")) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("check x: 1/4 item (25%)") and "ETA" in lines[0]
    assert lines[-1].startswith("check x: 4/4 item (100%), done in")


def test_lines_are_rate_limited_and_attributes_pass_through(caplog):
    caplog.set_level("INFO", logger="map3d.engine.monitor")

    class Loader(list):
        dataset = "the dataset"

    progress = Progress(Loader(range(100)), desc="eval")
    assert len(progress) == 100 and progress.dataset == "the dataset"
    assert sum(1 for _ in progress) == 100
    assert len(caplog.records) == 1  # only the final line within LOG_EVERY_S
    assert list(Progress(range(3), desc="quiet", enabled=False)) == [0, 1, 2]
    assert len(caplog.records) == 1


def test_in_a_terminal_a_bar(monkeypatch, caplog):
    pytest.importorskip("tqdm")
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    caplog.set_level("INFO", logger="map3d.engine.monitor")
    assert sum(Progress(range(5), desc="viz", unit="shape")) == 10
    assert "viz:   0%|" in terminal.getvalue() and "0/5" in terminal.getvalue()
    assert not caplog.records  # the bar replaces the log lines


def test_log_lines_go_above_the_bar(monkeypatch):
    tqdm = pytest.importorskip("tqdm").tqdm
    terminal = Terminal()
    logger = logging.getLogger("map3d.test_progress")
    handler = TqdmLoggingHandler(terminal)
    logger.addHandler(handler)
    try:
        with tqdm(total=3, file=terminal, desc="bar") as bar:
            bar.update(1)
            logger.warning("a log line")
            bar.update(2)
    finally:
        logger.removeHandler(handler)
    # tqdm.write clears the bar, writes the line on a line of its own, then redraws the bar
    assert "\na log line\n" in terminal.getvalue().replace("\r", "\n")


def test_eval_reports_progress_without_a_terminal(pretrained, tmp_path, capsys):
    capsys.readouterr()
    checkpoint = str(pretrained / "last.pt")
    assert main(["eval", "--checkpoint", checkpoint, "--out", str(tmp_path / "r.json")]) == 0
    assert "eval synthetic/test: 2/2 batch (100%), done in" in capsys.readouterr().err
