"""tools/frames_to_limit.py end to end on one small measurement: rendered, answered by the direct path,
compared with perfect centroiding; the JSON resumes instead of evaluating again."""
import json

from tools import frames_to_limit


def test_one_measurement_end_to_end_and_resumed(tmp_path, capsys):
    from sevi.regressor.batches import target_stats
    from sevi.regressor.checkpoints import build_model, save_final_model
    from sevi.regressor.train_config import PRESETS

    cfg = PRESETS["tiny"].replace(spot_blur=0.015)  # a frames model (untrained): runs the code path
    m = build_model(cfg)
    m.set_target_stats(*target_stats(cfg))
    model = tmp_path / "model"
    save_final_model(m.eval(), cfg, model)
    out = tmp_path / "out"
    argv = ["--model", str(model), "--frames", "60", "--measurements", "1", "--out", str(out), "--device", "cpu",
            "--no-truth-start", "--no-floor", "--threads", "1"]
    assert frames_to_limit.main(argv) == 0
    doc = json.loads((out / "frames_to_limit.json").read_text())
    (row,) = doc["rows"]
    assert row["kind"] == "prior" and row["frames"] == 60 and row["detected"] > 0
    assert row["direct"] > 0 and row["oracle"] > 0 and row["direct_s"] > 0
    assert row["error_bars"] == "batches 60" and doc["batches"] == 100  # 60 frames: one per batch
    assert doc["summary"]["all"]["n"] == 1 and (out / "frames_to_limit.png").exists()
    assert len(list((out / "cache").glob("*.npz"))) == 1, "the rendered measurement is cached"
    capsys.readouterr()
    assert frames_to_limit.main(argv) == 0  # resumed: nothing evaluated again
    assert json.loads((out / "frames_to_limit.json").read_text())["rows"] == doc["rows"]
    # the other estimator on the same rendered measurement: read from the first run's cache, not rendered again
    from sevi.fit.estimators import DEFAULT_ESTIMATOR, ESTIMATORS

    other = next(e for e in ESTIMATORS if e != DEFAULT_ESTIMATOR)
    second = tmp_path / "other"
    i = argv.index("--out")
    assert frames_to_limit.main(argv[:i] + ["--out", str(second), "--cache", str(out / "cache"), "--estimator", other]
                                + argv[i + 2:]) == 0
    doc2 = json.loads((second / "frames_to_limit.json").read_text())
    (row2,) = doc2["rows"]
    assert row["estimator"] == DEFAULT_ESTIMATOR and doc2["estimator"] == other and row2["estimator"] == other
    assert row2["detected"] == row["detected"] and row2["oracle"] == row["oracle"]
    assert not (second / "cache").exists()
    # the model's error bars on the same rendered measurement: the same step, other bars (the answer moves
    # only through the truncation of its posterior to the prior's boxes, whose mean depends on the bars)
    third = tmp_path / "model_bars"
    assert frames_to_limit.main(argv[:i] + ["--out", str(third), "--cache", str(out / "cache"), "--batches", "0"]
                                + argv[i + 2:]) == 0
    (row3,) = json.loads((third / "frames_to_limit.json").read_text())["rows"]
    assert row3["error_bars"] == "model" and abs(row3["direct"] / row["direct"] - 1) < 0.05
    assert row3["z_R"] != row["z_R"]
