"""cluster.yaml validates with Ray's own launcher validator, and opens no Ray port to the world."""

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RAY_PORTS = {6379, 8265, 10001, 8076, 52365}


def load():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_with_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(load()))
    validate_config(config)
    assert config["head_node_type"] == "head"
    assert config["available_node_types"]["a100_worker"]["node_config"]["InstanceType"] == "p4d.24xlarge"


def test_no_ray_port_open_beyond_the_cluster():
    cfg = load()
    for rule in cfg["provider"]["security_group"]["IpPermissions"]:
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        assert not ports & RAY_PORTS, f"security group opens a Ray port: {rule}"
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head, "the dashboard/job API must listen on localhost only"
    assert any("--shm-size" in o for o in cfg["docker"]["run_options"]), "/dev/shm must be raised"
    assert any("pip install" in c and "/home/ray/suite" in c for c in cfg["setup_commands"])
    assert "ray[default,train,tune]==2.60.0" in " ".join(cfg["setup_commands"])


def test_torch_is_pinned_to_the_tested_cuda_build_before_anything_else():
    cmds = load()["setup_commands"]
    first = cmds[0].split()
    assert first[:3] == ["pip", "install", "-q"] and "torch==2.13.0" in first, cmds[0]
    index = first[first.index("--index-url") + 1]
    assert index.startswith("https://download.pytorch.org/whl/cu12"), index
    # The suite's install comes after, and nothing else names torch again (it would re-resolve it).
    assert not any("torch" in c for c in cmds[1:]), cmds


def test_validator_rejects_a_broken_config():
    # The test above can fail: the validator is strict about unknown fields.
    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = load()
    bad["available_node_types"]["a100_worker"]["gpu_count"] = 8
    with pytest.raises(Exception):
        validate_config(prepare_config(bad))
