"""Test-wide settings. Ray's settings go in before any test imports ray."""

import os

# No token auth in tests, no memory monitor on a shared 2-core box, no uv workers (docs/ray.md).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained model of the tiny preset saved as a final model (model.pt + config.json): its directory."""
    from sevi.regressor.batches import target_stats
    from sevi.regressor.checkpoints import build_model, save_final_model
    from sevi.regressor.train_config import PRESETS
    cfg = PRESETS["tiny"]
    m = build_model(cfg)
    m.set_target_stats(*target_stats(cfg))
    d = tmp_path_factory.mktemp("tiny_model")
    save_final_model(m.eval(), cfg, d)
    return d
