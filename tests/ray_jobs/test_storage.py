"""Output locations: URIs kept as URIs, relative paths refused inside a submitted job. No Ray needed."""

import json

import pytest

from ray_jobs.storage import (
    JOB_CONFIG_ENV,
    OutputPathError,
    join,
    resolve_output,
    submitted_working_dir,
)

SUBMITTED = {JOB_CONFIG_ENV: json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123abcd.zip"},
                                         "metadata": {}})}


def test_uris_are_never_made_local_paths():
    assert resolve_output("s3://bucket/runs/", "--storage-path", "job", environ={}) == "s3://bucket/runs"
    assert resolve_output("file:///tmp/runs", "--storage-path", "job", environ=SUBMITTED) == "file:///tmp/runs"
    assert join("s3://bucket/runs", "name", "final") == "s3://bucket/runs/name/final"
    with pytest.raises(OutputPathError, match="not a URI"):
        resolve_output("3d://x", "--storage-path", "job", environ={})


def test_relative_paths_resolve_against_the_cwd_outside_a_submitted_job(tmp_path):
    assert resolve_output("runs", "--storage-path", "job", environ={}, cwd=str(tmp_path)) == str(tmp_path / "runs")
    assert resolve_output("/abs/runs/", "--storage-path", "job", environ=SUBMITTED) == "/abs/runs"


def test_a_submitted_job_refuses_relative_outputs_and_says_why():
    assert submitted_working_dir(SUBMITTED) == "gcs://_ray_pkg_0123abcd.zip"
    assert submitted_working_dir({JOB_CONFIG_ENV: json.dumps({"runtime_env": {}})}) is None
    with pytest.raises(OutputPathError, match=r"coating_tune: --models 'models' is relative, and this job runs in "
                                              r"Ray's temporary copy of its working directory \(/tmp/ray/x\)"):
        resolve_output("models", "--models", "coating_tune", environ=SUBMITTED, cwd="/tmp/ray/x")
