"""tools/bench_frames.py end to end."""


def test_bench_frames_runs_end_to_end_with_the_oracle_on_a_disc(capsys):
    import re

    from tools.bench_frames import main
    main(["--frames", "2", "--hits", "disc:0.5", "--scipy-frames", "1", "--threads", "1", "--oracle"])
    out = capsys.readouterr().out
    ours = float(re.search(r"^ours\s+([0-9.]+)", out, re.M).group(1))
    truth_fit = float(re.search(r"MAP fit started at the truth.*recall ([0-9.]+)", out).group(1))
    assert 0.7 < ours <= 1.0 and 0.7 < truth_fit <= 1.0
    assert "whole clusters" in out and "from-truth" in out
