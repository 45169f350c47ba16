"""The actor pool never takes the CPUs the read stage needs, whatever --workers says."""

import pytest

from inference.pool import WorkersError, parse_workers, plan_pool, threads_on_this_node


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), ("auto", None), ("3", (3, 3)), ("1:4", (1, 4)), (2, (2, 2))],
)
def test_parse_workers(text, expected):
    assert parse_workers(text) == expected


@pytest.mark.parametrize("text", ["0", "3:1", "x", "1:y", "-2"])
def test_parse_workers_rejects_with_the_option_named(text):
    with pytest.raises(WorkersError, match="--workers"):
        parse_workers(text)


@pytest.mark.parametrize("requested", [None, (1, 1), (2, 2), (1, 8), (16, 16)])
@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 16, 64])
def test_cpu_pool_always_leaves_a_cpu_for_reading(requested, cpus):
    plan = plan_pool(requested, None, cpus, 0)
    assert plan.device == "cpu" and plan.num_gpus == 0
    assert 1 <= plan.min_size <= plan.max_size
    if cpus >= 2:
        assert plan.max_size * plan.num_cpus <= cpus - 1
    else:
        assert plan.max_size * plan.num_cpus < cpus
    assert plan.torch_threads * plan.max_size <= max(cpus, 1)
    # A listing task still fits beside every actor (a 1-CPU worker Pod with a 0.5-CPU actor and a
    # 1-CPU task waited for ever on a real node).
    assert 0 < plan.reader_cpus <= cpus - plan.max_size * plan.num_cpus


def test_capping_is_reported():
    plan = plan_pool((2, 2), None, 2, 0)
    assert (plan.min_size, plan.max_size) == (1, 1)
    assert any("capped" in note for note in plan.notes)


def test_gpu_pool_defaults_to_one_actor_per_gpu():
    plan = plan_pool(None, None, 32, 4)
    assert (plan.device, plan.num_gpus, plan.min_size, plan.max_size) == ("cuda", 1.0, 1, 4)
    assert plan.num_cpus == 1.0


def test_fractional_gpus_pack_actors():
    plan = plan_pool(None, 0.5, 32, 2)
    assert plan.max_size == 4


def test_autoscaling_cluster_without_gpus_yet_trusts_the_request():
    plan = plan_pool((1, 4), 1, 2, 0)
    assert (plan.device, plan.min_size, plan.max_size) == ("cuda", 1, 4)
    assert plan.num_cpus == 0.0  # 2 CPUs could not hold 4 one-CPU actors and a reader
    assert any("no GPU yet" in note for note in plan.notes)


@pytest.mark.parametrize("gpus", [0, 4])
@pytest.mark.parametrize("requested", [None, (1, 1), (2, 2), (1, 4)])
@pytest.mark.parametrize(("cluster_cpus", "node_cpus"), [(4, 2), (16, 2), (64, 8), (6, 4), (3, 3)])
def test_threads_never_exceed_the_largest_nodes_cpus(gpus, requested, cluster_cpus, node_cpus):
    plan = plan_pool(requested, None, cluster_cpus, gpus, node_cpus=node_cpus)
    assert 1 <= plan.torch_threads <= node_cpus
    # the cap changes threads only: the pool is planned from the whole cluster as before
    whole = plan_pool(requested, None, cluster_cpus, gpus)
    assert (plan.min_size, plan.max_size, plan.num_cpus) == (whole.min_size, whole.max_size, whole.num_cpus)


def test_two_2_cpu_nodes_give_a_lone_cpu_actor_2_threads_not_4():
    assert plan_pool(None, None, 4, 0).torch_threads == 4  # one 4-CPU node
    assert plan_pool(None, None, 4, 0, node_cpus=2).torch_threads == 2


def test_an_actor_caps_its_threads_at_its_own_nodes_cpus(ray_runtime):
    """On a cluster of unequal nodes the plan fits the largest: an actor on a smaller node takes
    no more threads than its node has (here the driver's node: 2 CPUs)."""
    assert threads_on_this_node(8) == 2
    assert threads_on_this_node(1) == 1
    assert threads_on_this_node(None) is None
