"""The follow schedule and the follower, against real Redis (and the real worker).

What a user would notice if these broke: a job followed twice at once, a job
never followed again after its worker died, a provider webhook that waits out
a long poll delay, or the reconciler polling every job at once.
"""

from __future__ import annotations

import asyncio

from service import tasks
from service.resources import open_resources
from service.store.following import Release
from service.store.jobs import Changes
from tests.integration.conftest import create_dataset, start_job, wait_for_job


async def test_due_jobs_are_claimed_urgent_first_and_only_once(settings) -> None:
    async with open_resources(settings) as resources:
        schedule = resources.following
        now = tasks.now_ms()
        assert await schedule.schedule(["job_a", "job_b"], now - 1000) == 2
        assert await schedule.schedule(["job_later"], now + 60_000) == 1
        await schedule.schedule(["job_urgent"], tasks.urgent_score(), poke=True)

        first = await schedule.claim(now, now + 30_000, limit=2)
        assert [c.job_id for c in first.claims] == ["job_urgent", "job_a"]
        assert first.earliest_due_ms is not None
        # Another follower in the same instant gets what is left, never the same job.
        second = await schedule.claim(now, now + 30_000, limit=10)
        assert [c.job_id for c in second.claims] == ["job_b"]
        assert second.earliest_due_ms == now + 60_000
        assert (await schedule.claim(now, now + 30_000, limit=10)).claims == []
        assert await schedule.state("job_a") == "claimed"
        assert await schedule.state("job_later") == "due"
        assert await schedule.sizes() == (1, 3)


async def test_adding_keeps_a_waiting_jobs_time_and_a_poke_moves_it_up(settings) -> None:
    async with open_resources(settings) as resources:
        schedule = resources.following
        now = tasks.now_ms()
        await schedule.schedule(["job_x"], now + 60_000)
        # The reconciler adds every active job: one that waits keeps its place.
        assert await schedule.schedule(["job_x", "job_new"], now) == 1
        claimed = await schedule.claim(now, now + 30_000, limit=10)
        assert [c.job_id for c in claimed.claims] == ["job_new"]
        # A poke (a provider webhook) pulls it ahead of everything.
        await tasks.sync_job_now(schedule, "job_x")
        claimed = await schedule.claim(now, now + 30_000, limit=10)
        assert [c.job_id for c in claimed.claims] == ["job_x"]


async def test_a_lapsed_claim_is_taken_again_and_the_old_holder_cannot_release_it(
    settings,
) -> None:
    async with open_resources(settings) as resources:
        schedule = resources.following
        now = tasks.now_ms()
        await schedule.schedule(["job_y"], now)
        (dead,) = (await schedule.claim(now, now + 1_000, limit=1)).claims
        # Not before the claim lapses ...
        assert (await schedule.claim(now + 999, now + 31_000, limit=1)).claims == []
        # ... and then by the next follower to look.
        (alive,) = (await schedule.claim(now + 1_001, now + 31_001, limit=1)).claims
        assert alive.job_id == "job_y"
        # The worker that was thought dead finishes late: its release changes nothing.
        assert await schedule.release([Release("job_y", dead.token, None)], urgent_ms=0) == 0
        assert await schedule.state("job_y") == "claimed"
        assert (
            await schedule.release([Release("job_y", alive.token, now + 5_000)], urgent_ms=0) == 1
        )
        assert await schedule.state("job_y") == "due"


async def test_a_poke_while_the_step_runs_makes_the_job_due_when_it_ends(settings) -> None:
    async with open_resources(settings) as resources:
        schedule = resources.following
        now = tasks.now_ms()
        await schedule.schedule(["job_z"], now)
        (claim,) = (await schedule.claim(now, now + 30_000, limit=1)).claims
        await tasks.sync_job_now(schedule, "job_z")
        assert await schedule.state("job_z") == "claimed"  # not stepped twice at once
        urgent = tasks.urgent_score()
        await schedule.release([Release("job_z", claim.token, now + 60_000)], urgent_ms=urgent)
        claimed = await schedule.claim(now, now + 30_000, limit=1)
        assert [c.job_id for c in claimed.claims] == ["job_z"]


async def test_a_poke_also_tells_the_step_already_running_to_go_round_again(
    client, settings
) -> None:
    dataset = await create_dataset(client)
    job = (await start_job(client, dataset["id"]))["id"]  # no worker: it stays pending
    async with open_resources(settings) as resources:
        read = await resources.jobs.read(job)
        assert read is not None
        await tasks.sync_job_now(resources.following, job)
        # The step's next write consumes the flag (and says so) ...
        first = await resources.jobs.apply(job, read, Changes(job=read.job))
        assert first.written
        assert first.poked
        # ... once.
        assert first.snapshot is not None
        second = await resources.jobs.apply(job, first.snapshot, Changes(job=read.job))
        assert second.written
        assert not second.poked


async def test_a_finished_job_leaves_the_schedule_and_a_lost_entry_is_restored(
    client, worker, settings
) -> None:
    dataset = await create_dataset(client)
    job = await start_job(client, dataset["id"])
    resources = worker.ctx["resources"]
    await wait_for_job(client, job["id"], {"succeeded"})
    for _ in range(100):
        if await resources.following.state(job["id"]) is None:
            break
        await asyncio.sleep(0.05)
    assert await resources.following.state(job["id"]) is None
    assert job["id"] not in await resources.jobs.active_ids()

    # A job whose schedule entry was lost (a flushed key, a failover) is followed
    # again by the reconciler and still reaches its end.
    second = await start_job(client, dataset["id"])
    await resources.redis.zrem(resources.keys.follow_due, second["id"])
    await resources.redis.zrem(resources.keys.follow_claimed, second["id"])
    from worker.tasks import reconcile

    counts = await reconcile(worker.ctx)
    assert counts["jobs"] >= 1
    await wait_for_job(client, second["id"], {"succeeded"})


async def test_urgent_work_is_claimed_even_when_polls_fill_the_ordinary_room(settings) -> None:
    async with open_resources(settings) as resources:
        schedule = resources.following
        now = tasks.now_ms()
        await schedule.schedule([f"job_poll{i}" for i in range(5)], now - 10)
        # No ordinary room left (a follower whose other slots are busy): polls wait ...
        cutoff = now - tasks.PRIORITY_LEAD_MS // 2
        claimed = await schedule.claim(
            now, now + 30_000, 2, ordinary_limit=0, urgent_before_ms=cutoff
        )
        assert claimed.claims == []
        # ... but a poked job is taken at once.
        await tasks.sync_job_now(schedule, "job_hook")
        claimed = await schedule.claim(
            now, now + 30_000, 2, ordinary_limit=0, urgent_before_ms=cutoff
        )
        assert [c.job_id for c in claimed.claims] == ["job_hook"]
        claimed = await schedule.claim(
            now, now + 30_000, 3, ordinary_limit=2, urgent_before_ms=cutoff
        )
        assert [c.job_id for c in claimed.claims] == ["job_poll0", "job_poll1"]
