"""The concise view of a local run: one line per step, the whole log in a file."""

from __future__ import annotations

import io

from pipeline.progress import RunView

# What the KFP local runner prints for two tasks (colours included), abridged.
KFP_OUTPUT = """\
14:28:00.038 - INFO - Executing task \x1b[96m'prepare-data'\x1b[0m
14:28:00.039 - INFO - Streamed logs:
    [KFP Executor 2026-12-01 14:28:00,153 INFO]: Got executor_input:
    {
        "inputs": {}
    }
14:28:16.651 - INFO - Task \x1b[96m'prepare-data'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
14:28:16.652 - INFO - Task \x1b[96m'prepare-data'\x1b[0m outputs:
    metrics: Metrics( name='metrics',
                      uri='/x/prepare-data/metrics',
                      metadata={'test_images': 5000.0, 'train_images': 800.0} )
--------------------------------------------------------------------------------
14:28:16.656 - INFO - Executing task \x1b[96m'train-model-2'\x1b[0m
    [KFP Executor 2026-12-01 14:32:29,044 INFO]: epoch 1/16  loss [0.310]  val acc [0.685]
    [KFP Executor 2026-12-01 14:33:44,059 INFO]: epoch 2/16  loss [0.640]  val acc [0.695]
    dyn-adapter train: error: /data: no such directory
14:40:00.000 - INFO - Task \x1b[96m'train-model-2'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
"""


class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def view(tty: bool) -> tuple[RunView, io.StringIO, Terminal]:
    log, out = io.StringIO(), Terminal(tty)
    labels = {"prepare-data": "prepare data", "train-model-2": "baseline: static PETL"}
    return RunView(log, labels, total=11, out=out), log, out


def test_everything_goes_to_the_log_and_steps_to_the_terminal():
    v, log, out = view(tty=False)
    for chunk in (KFP_OUTPUT[:100], KFP_OUTPUT[100:]):  # lines split across writes
        v.write(chunk)
    v.close_view()
    logged = log.getvalue()
    assert "\x1b[" not in logged  # no colour codes in the file
    assert "Task 'prepare-data' finished with status SUCCESS" in logged
    # The executor input (a JSON dump) is folded into one line; what follows is kept whole.
    assert '"inputs": {}' not in logged and "(3 lines of executor input folded)" in logged
    assert "metadata={'test_images': 5000.0, 'train_images': 800.0}" in logged
    assert logged.endswith("finished with status FAILURE\n")
    lines = out.getvalue().splitlines()
    assert lines == [
        "step 1 of 11: prepare data",
        "  done: prepare data (0 s, train images 800)",
        "step 2 of 11: baseline: static PETL",
        "  done FAILURE: baseline: static PETL (0 s)",
    ]
    assert v.user_errors == ["dyn-adapter train: error: /data: no such directory"]
    assert [s["task"] for s in v.finished] == ["prepare-data", "train-model-2"]


def test_a_per_exit_headline_is_the_last_exits():
    from pipeline.progress import _headline

    metrics = {f"val_accuracy_exit{k}": a for k, a in enumerate([0.5, 0.6, 0.8])}
    assert _headline(metrics) == ", val accuracy, last exit 0.8"
    assert _headline({**metrics, "test_accuracy_exit0": 0.7}) == ", test accuracy, last exit 0.7"
    assert _headline({}) == ""


def test_on_a_terminal_the_step_in_flight_shows_its_epoch_and_time_left(tmp_path, monkeypatch):
    """Epochs come as records the trainer appends to the run's progress file; the epoch lines
    of the log text alone move nothing."""
    from dyn_adapter.console import PROGRESS_FILE_ENV, record_progress

    progress = tmp_path / "run.log.progress.jsonl"
    progress.write_text("")
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(progress))
    log, out = io.StringIO(), Terminal(tty=True)
    labels = {"prepare-data": "prepare data", "train-model-2": "baseline: static PETL"}
    v = RunView(log, labels, total=11, out=out, progress=progress)
    head, tail = KFP_OUTPUT.split("    [KFP Executor 2026-12-01 14:32:29")
    v.write(head)
    v.write("    [KFP Executor 2026-12-01 14:32:29" + tail.split("\n", 1)[0] + "\n")
    assert "epoch 1/16" not in out.getvalue()  # log text, no record yet
    record_progress("train", epoch=1, epochs=16, val_accuracy=[0.685])
    record_progress("train", epoch=2, epochs=16, val_accuracy=[0.695])
    v.write(tail.split("\n", 1)[1])
    v.close_view()
    assert "baseline: static PETL, epoch 2/16 (val acc last exit 0.695)" in out.getvalue()
    assert "left" in out.getvalue()
    assert "Got executor_input" not in out.getvalue()


def test_the_other_long_stages_show_the_work_done_and_time_left(tmp_path, monkeypatch):
    """Calibration and search count their work (images, budgets) in records; the view shows the
    count of the step in flight."""
    from dyn_adapter.console import PROGRESS_FILE_ENV, record_progress

    progress = tmp_path / "run.log.progress.jsonl"
    progress.write_text("")
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(progress))
    log, out = io.StringIO(), Terminal(tty=True)
    v = RunView(log, {"calibrate": "calibrate risk-controlled exits"}, 11, out, progress=progress)
    v.write("14:28:16.656 - INFO - Executing task \x1b[96m'calibrate'\x1b[0m\n")
    record_progress("calibrate", done=2048, total=10000, unit="calibration images")
    v.write("    [KFP Executor 2026-12-01 14:32:29,044 INFO]: calibration scores\n")
    v.close_view()
    assert "calibrate risk-controlled exits, 2048/10000 calibration images," in out.getvalue()
    assert "left" in out.getvalue()


def test_progress_records_are_json_lines_and_never_stop_the_work(tmp_path, monkeypatch):
    import json

    from dyn_adapter.console import PROGRESS_FILE_ENV, record_progress

    monkeypatch.delenv(PROGRESS_FILE_ENV, raising=False)
    record_progress("train", epoch=1)  # no file named: nothing to do
    path = tmp_path / "p.jsonl"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(path))
    record_progress("train", epoch=1, epochs=2, val_accuracy=[0.5, 0.6])
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["stage"] == "train" and record["val_accuracy"] == [0.5, 0.6]
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(tmp_path / "no" / "such" / "dir" / "p.jsonl"))
    record_progress("train", epoch=2)  # unwritable: skipped, no error


def test_a_loop_task_is_named_by_its_item():
    """A loop body of several tasks keeps the tasks' names; the iteration is in their paths."""
    log, out = io.StringIO(), Terminal(tty=False)
    v = RunView(log, {"evaluate-model": "evaluate"}, total=2, out=out, items=["eurosat", "dtd"])
    for k in (0, 1):
        v.write(
            "Executing task 'evaluate-model'\n"
            f'    "outputFile": "/kfp/run/for-loop-1-iteration-{k}/evaluate-model/out.json"\n'
            "Task 'evaluate-model' finished with status SUCCESS\n"
        )
    v.close_view()
    done = [line for line in out.getvalue().splitlines() if "done" in line]
    assert done == ["  done: evaluate [eurosat] (0 s)", "  done: evaluate [dtd] (0 s)"]


def test_log_records_go_to_the_run_log_and_only_warnings_to_the_terminal(tmp_path):
    """The local runner logs each task's input resolution at INFO through the root logger."""
    import logging

    from pipeline.progress import run_view

    terminal = io.StringIO()
    handler = logging.StreamHandler(terminal)
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    try:
        with run_view(tmp_path / "run.log", {}, total=1):
            logging.getLogger("root").info("After expression selector: {}")
            logging.getLogger("kfp").warning("something to see")
        logging.getLogger("kfp").info("after the run")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert "After expression selector" in (tmp_path / "run.log").read_text()
    assert "After expression selector" not in terminal.getvalue()
    assert "something to see" in terminal.getvalue() and "after the run" in terminal.getvalue()
