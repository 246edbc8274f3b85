"""Progress output: plain lines, not carriage-return bars, where stderr is not a terminal."""

from distrinews.progress import LineProgress, progress_bar


def test_off_a_terminal_progress_is_periodic_plain_lines(capsys):
    bar = progress_bar(4, "epoch 1/2", enabled=True)  # pytest's captured stderr: no terminal
    assert isinstance(bar, LineProgress)
    bar.every = 0.0  # a line at every update
    bar.update()
    bar.set_postfix(loss="0.5000")
    bar.update()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("epoch 1/2: 1/4 (25%), 0 s, eta ")
    assert lines[1].startswith("epoch 1/2: 2/4 (50%)") and lines[1].endswith(", loss=0.5000")
    assert lines[2].startswith("epoch 1/2: 2/4 (50%)") and len(lines) == 3


def test_lines_wait_for_the_period_and_short_loops_leave_none(capsys):
    bar = LineProgress(100, "validation", leave=False)  # 5 s between lines
    for _ in range(100):
        bar.update()
    bar.close()
    assert capsys.readouterr().err == ""


def test_other_ranks_print_nothing(capsys):
    bar = progress_bar(3, "epoch 1/1", enabled=False)
    bar.update()
    bar.close()
    assert capsys.readouterr().err == ""
