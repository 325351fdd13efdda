"""The task SDK on a real worker: needs pick the queue, progress shows in the task state."""

from __future__ import annotations

import textwrap
import time

import pytest

from compute.sdk import Needs

from .waiting import wait_for

TIMEOUT = 60

TEAM_TASKS = textwrap.dedent('''
    import time

    from compute.sdk import Needs, compute_task


    @compute_task("team.steps", needs=Needs(ram_gb=1.5))
    def steps(self, count: int) -> dict:
        for done in range(count):
            self.progress(done, count, note="stepping")
            time.sleep(0.3)
        return {"hostname": self.request.hostname, "count": count}


    @compute_task("team.huge_vram", needs=Needs(gpu=True, vram_gb=70))
    def huge_vram(self) -> str:
        return "ran"
''')


@pytest.fixture
def team(tmp_path, workers):
    (tmp_path / "team_sdk.py").write_text(TEAM_TASKS)
    return workers("sdk-a", "--concurrency", "1", "--include", "team_sdk",
                   env={"PYTHONPATH": str(tmp_path)})


def test_needs_route_to_a_tier_queue_the_worker_serves_and_progress_is_visible(
        app, team, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    import team_sdk

    result = team_sdk.steps.delay(5)
    progress = wait_for(lambda: result.state == "PROGRESS" and result.info, timeout=TIMEOUT,
                        what="progress reported")
    value = result.get(timeout=TIMEOUT)

    assert team_sdk.steps.needs_queue == "cpu.ram2"
    assert value == {"hostname": team.node, "count": 5}
    assert progress["total"] == 5 and progress["note"] == "stepping"
    assert progress["hostname"] == team.node


def test_work_that_no_worker_can_hold_waits_in_its_tier_queue(app, team, tmp_path, monkeypatch,
                                                              broker):
    monkeypatch.syspath_prepend(str(tmp_path))
    import team_sdk

    result = team_sdk.huge_vram.delay()
    time.sleep(1.5)

    assert team_sdk.huge_vram.needs_queue == "gpu.vram80"
    assert result.state == "PENDING"  # this CPU-only worker never takes it
    with broker.client() as client:
        assert client.llen("gpu.vram80") == 1


def test_needs_are_checked():
    with pytest.raises(ValueError, match="vram_gb needs gpu=True"):
        Needs(vram_gb=8)
    with pytest.raises(ValueError, match="region 'EU' is not allowed"):
        Needs(region="EU")
    assert Needs(gpu=True, vram_gb=10, region="eu-west").queue() == "gpu.vram12@eu-west"
