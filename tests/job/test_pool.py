"""The actor pool never takes the CPUs the read stage needs, whatever --workers says."""

import pytest

from inference.pool import WorkersError, parse_workers, plan_pool


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
