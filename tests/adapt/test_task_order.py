"""The order a cluster starts adaptation tasks in (``tasks.longest_first``): most points first,
so no worker is left running one large scene while the others idle at the end of a run."""

from __future__ import annotations

from tttkd.adapt.tasks import Task, longest_first, plan_tasks

POINTS = {"a": 100, "b": 300, "c": 200, "d": 300}


def test_scenes_start_largest_first_ties_in_plan_order_streams_before_all():
    tasks = plan_tasks(["ttt-kd", "ttt-kd-online"], {"ttt-kd-online"}, list(POINTS), set())
    order = longest_first(tasks, POINTS.__getitem__)
    assert [t.key for t in order] == [
        "ttt-kd-online@stream",  # 900 points in all
        "ttt-kd@b",
        "ttt-kd@d",  # as large as b, after it as planned
        "ttt-kd@c",
        "ttt-kd@a",
    ]
    assert sorted(order, key=lambda t: t.key) == sorted(tasks, key=lambda t: t.key)


def test_unknown_sizes_keep_the_plan_order():
    tasks = [Task(("ttt-kd",), (s,)) for s in "dcba"]
    assert longest_first(tasks, lambda s: 0) == tasks
