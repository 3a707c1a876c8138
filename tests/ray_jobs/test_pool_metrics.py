"""The pool's work in Ray's own metrics: a local head with a metrics export port, a few batches, and
the values read back from its Prometheus endpoint (batches served, generation time and the
consumer's wait, per actor and per recipe)."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, os, socket, sys, time, urllib.request
    import ray
    from ray_jobs.pool import PoolClient, PoolSpec, stop_pool

    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _metrics_export_port=port,
             log_to_driver=False, object_store_memory=128 * 1024**2)
    spec = PoolSpec(name="metrics-test", actors=2, cpus_per_actor=0.5, idle_timeout_s=0)
    client = PoolClient.connect(spec, in_flight=2, timeout_s=60)
    params = {"grid": 32, "batch": 2, "electrons": 500}
    got = [seed for seed, _, _ in client.stream("sevi-counts", params, range(5))]
    client.batch("sevi-counts", params, 7)  # one more, on its own: actor 7 mod 2 = gen's actor 1
    want = ("ray_datagen_batches_served", "ray_datagen_generation_seconds_count",
            "ray_datagen_consumer_wait_seconds_count")
    lines, deadline = [], time.monotonic() + 45
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        lines = [l for l in text.splitlines() if l.startswith("ray_datagen_")]
        if all(any(l.startswith(w) for l in lines) for w in want):
            break
        time.sleep(1)
    stop_pool(spec.name)
    print("RESULT " + json.dumps({"seeds": got, "lines": lines}))
''')


def parse(lines):
    """{(metric, actor, recipe): value} from Prometheus text lines."""
    import re

    out = {}
    for line in lines:
        m = re.match(r'(\w+)\{(.*)\} ([0-9.eE+-]+)$', line)
        if not m:
            continue
        tags = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if "le" in tags:
            continue
        out[m.group(1), tags.get("actor"), tags.get("recipe")] = float(m.group(3))
    return out


def test_pool_metrics_reach_the_prometheus_endpoint(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_metrics_report_interval_ms": "1000",
           "RAY_memory_monitor_refresh_ms": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=150,
                          cwd=tmp_path)
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and result, done.stdout[-2000:] + done.stderr[-3000:]
    res = json.loads(result[0][len("RESULT "):])
    assert res["seeds"] == [0, 1, 2, 3, 4]
    v = parse(res["lines"])
    served = {a: v[k] for k in v if k[0] == "ray_datagen_batches_served_total" for a in [k[1]]
              if k[2] == "sevi-counts"}
    # stream: requests k = 0..4 go to actor k mod 2 (3 to -0, 2 to -1); the lone batch(seed 7) to -1
    assert served == {"metrics-test-0": 3.0, "metrics-test-1": 3.0}, res["lines"]
    gen = {k[1]: val for k, val in v.items() if k[0] == "ray_datagen_generation_seconds_count"}
    assert gen == {"metrics-test-0": 3.0, "metrics-test-1": 3.0}, res["lines"]
    gen_sum = {k[1]: val for k, val in v.items() if k[0] == "ray_datagen_generation_seconds_sum"}
    assert all(0 < s < 60 for s in gen_sum.values()), gen_sum
    wait = {k[1]: val for k, val in v.items() if k[0] == "ray_datagen_consumer_wait_seconds_count"}
    assert wait == {"metrics-test-0": 3.0, "metrics-test-1": 3.0}, res["lines"]
