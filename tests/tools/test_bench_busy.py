"""tools/bench_busy.py: one recommend call timed as a user runs it, with its load, on a given registry."""
import json

import numpy as np

from coating.line import history_rows, plant, schema
from coating.models import fit_cycles
from tools import bench_busy


def test_recommend_timed_through_the_command_with_its_load(tmp_path):
    hist = schema.history_from_measurements(plant.simulate(plant.PlantParams(), 1, 5))
    schema.write_history(history_rows.select_rows(hist, np.arange(60)), tmp_path / "hist60.csv")
    std = plant.standard_reflectance(plant.PlantParams())
    schema.write_standard(schema.Standard(schema.WAVELENGTHS_NM.astype(float), std[0], std[1]), tmp_path / "std.csv")
    fit_cycles.fit_all(schema.read_history(tmp_path / "hist60.csv"), tmp_path / "models", kinds=("greybox",),
                       log=lambda s: None, hparams={"greybox": {"epochs": 1, "inner_steps": 4, "width": 0}})
    assert bench_busy.main(["--out", str(tmp_path), "--models", str(tmp_path / "models"), "--conditions", "idle",
                            "--what", "recommend1"]) == 0
    doc = json.loads((tmp_path / "bench_busy.json").read_text())
    (r,) = doc["runs"]
    assert r["rc"] == 0 and r["what"] == "recommend1" and r["condition"] == "idle" and r["wall_s"] > 0
    assert {"load_before", "load_during_mean", "cpu_s", "met", "target"} <= set(r)
    assert (tmp_path / "out_recommend1_tuned" / "N61.txt").exists()
    assert doc["registries"]["tuned"]["hparams"]["epochs"] == 1
