"""Pure parts of running on a cluster: what an address means, how the actor pool is sized."""

from __future__ import annotations

import time

import pytest

from sentiment.cluster import DRIVER, LOCAL, SUBMIT, address_kind, describe
from sentiment.config import ScoreConfig, SentimentError, TrainConfig
from sentiment.score_job import IO_CPUS, plan_resources


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("", LOCAL),
        ("local", LOCAL),
        ("auto", DRIVER),
        ("127.0.0.1:6379", DRIVER),
        ("head-node.internal:6379", DRIVER),
        ("[::1]:6379", DRIVER),
        ("http://127.0.0.1:8265", SUBMIT),
        ("https://ray.example.com", SUBMIT),
        (" http://head:8265/ ", SUBMIT),
    ],
)
def test_address_kinds(address, kind):
    assert address_kind(address) == kind


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("ray://head:10001", "Ray Client address"),
        ("head", "not a Ray address"),
        ("head:port", "not a Ray address"),
        ("/tmp/ray", "not a Ray address"),
    ],
)
def test_bad_addresses_are_refused_with_what_to_give(address, says):
    with pytest.raises(SentimentError, match=says) as err:
        address_kind(address)
    assert "http://<head>:8265" in str(err.value)


def node(cpu: float, gpu: float = 0) -> dict[str, float]:
    return {"CPU": cpu, "GPU": gpu}


# (nodes, settings) -> (initial actors, min, max, GPUs per actor, CPUs per actor)
PLANS = [
    # one 2-CPU machine (local Ray): two single-threaded actors, I/O still fits beside them
    ([node(2)], {}, (2, 2, 2, 0.0, 0.85)),
    # a head with no CPUs and two one-CPU workers (the cluster): one actor each
    ([node(0), node(1), node(1)], {}, (2, 2, 2, 0.0, 0.75)),
    # heterogeneous CPU nodes: the smallest host sets the share, bigger ones hold more
    ([node(0), node(1), node(4)], {}, (5, 5, 5, 0.0, 0.75)),
    ([node(16)], {}, (16, 16, 16, 0.0, 0.95)),
    # GPU workers: one actor per GPU, wherever the CPUs are
    ([node(0), node(8, 1), node(8, 2)], {}, (3, 3, 3, 1.0, 1.0)),
    ([node(4), node(1, 1), node(1, 1)], {}, (2, 2, 2, 1.0, 0.75)),
    # a GPU request on a cluster without GPUs: one actor, waiting for a node that has one
    ([node(0), node(1)], {"gpus_per_actor": 1}, (1, 1, 1, 1.0, 0.0)),
    # room for an autoscaler: start with what fits now, grow to max_actors
    ([node(0), node(2)], {"max_actors": 8}, (2, 2, 8, 0.0, 0.85)),
    ([node(0), node(2)], {"min_actors": 1, "max_actors": 8}, (2, 1, 8, 0.0, 0.85)),
    ([node(0), node(2)], {"min_actors": 3}, (3, 3, 3, 0.0, 0.85)),
    # a fixed pool, and explicit CPUs per actor
    ([node(0), node(1), node(1)], {"actors": 5}, (5, 5, 5, 0.0, 0.75)),
    ([node(4), node(4)], {"cpus_per_actor": 2}, (2, 2, 2, 0.0, 2.0)),
    # nothing can host an actor now (a CPU-less head alone)
    ([node(0)], {}, (1, 1, 1, 0.0, 1.0)),
]


@pytest.mark.parametrize(("nodes", "settings", "expected"), PLANS)
def test_actor_pool_is_sized_from_the_nodes(nodes, settings, expected):
    plan = plan_resources(ScoreConfig(**settings), nodes)
    got = (plan["actors"], plan["min_actors"], plan["max_actors"], plan["gpus"], plan["cpus"])
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("nodes", [p[0] for p in PLANS if not p[1]])
def test_every_node_keeps_room_for_a_read_and_a_write_task(nodes):
    plan = plan_resources(ScoreConfig(), nodes)
    key, per = ("GPU", plan["gpus"]) if plan["gpus"] else ("CPU", 1.0)
    for n in nodes:
        actors_here = int(n[key] // per)
        if actors_here:
            assert actors_here * plan["cpus"] + IO_CPUS <= n["CPU"] + 1e-9


def test_describe_names_each_nodes_resources():
    assert describe([node(0), node(1), node(1)]) == "3 nodes: CPU 0+1+1, GPU 0"
    assert describe([node(8, 2)]) == "1 node: CPU 8, GPU 2"


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"min_actors": -1}, "--min-actors"),
        ({"max_actors": 2, "min_actors": 3}, "below --min-actors"),
        ({"resource_timeout_s": 0}, "--resource-timeout"),
    ],
)
def test_bad_pool_settings_are_refused(settings, says):
    with pytest.raises(SentimentError, match=says):
        ScoreConfig(**settings)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"workers": 2, "min_workers": 3}, "min workers"),
        ({"resource_timeout_s": -1}, "--resource-timeout"),
    ],
)
def test_bad_train_scaling_settings_are_refused(settings, says):
    with pytest.raises(SentimentError, match=says):
        TrainConfig(data="d", **settings)


def test_a_failing_actor_constructor_is_not_taken_for_a_lost_node(ray_local):
    """An error raised in an actor's constructor is the same on any node: never retried
    as lost work. A killed actor (as on a lost node) is."""
    import ray

    from sentiment.cluster import lost_work

    @ray.remote(num_cpus=0)
    class Deep:
        def __init__(self, fail: bool):
            if fail:
                raise RecursionError("maximum recursion depth exceeded")

        def ping(self) -> int:
            return 1

    with pytest.raises(Exception) as failed:
        ray.get(Deep.remote(True).ping.remote(), timeout=60)
    assert not lost_work(failed.value)
    alive = Deep.remote(False)
    assert ray.get(alive.ping.remote(), timeout=60) == 1
    ray.kill(alive)
    for _ in range(60):  # ray.kill returns before the actor is gone
        try:
            ray.get(alive.ping.remote(), timeout=30)
        except Exception as exc:
            assert lost_work(exc), exc
            break
        time.sleep(0.5)
    else:
        pytest.fail("the killed actor still answers")
