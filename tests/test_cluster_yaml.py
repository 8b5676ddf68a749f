"""cluster.yaml is a valid Ray cluster-launcher config, with the properties the project promises."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_validates_against_rays_schema(config):
    jsonschema.validate(config, SCHEMA)


def test_validates_with_rays_own_launcher_checks(config):
    # What `ray up` runs first: defaults filled in from the provider, then checked.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c.update(max_workers="many"),
        lambda c: c.pop("provider"),
        lambda c: c.update(autoscale="yes"),  # an unknown top-level key
        lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"),
        lambda c: c["available_node_types"]["head"].update(resources={"CPU": -1}),
    ],
)
def test_a_broken_copy_fails_validation(config, breakage):
    broken = copy.deepcopy(config)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_cpu_head_runs_no_work_and_gpu_workers_autoscale_from_zero(config):
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(workers) == 1 and workers[0]["min_workers"] == 0 and workers[0]["max_workers"] >= 1
    assert workers[0]["node_config"]["InstanceType"].startswith(("g", "p"))  # AWS GPU families


def test_token_auth_on_and_dashboard_only_on_localhost(config):
    text = (REPO / "cluster.yaml").read_text()
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert "0.0.0.0" not in text and "RAY_AUTH_MODE=disabled" not in text
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert any("pip install" in c and "sentiment-jobs" in c for c in config["setup_commands"])
