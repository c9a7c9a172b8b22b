"""Worker slots under a provider's own limit: no head-of-line blocking (contract section 6,
WORKER_CONCURRENCY), through the worker process."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg  # noqa: TID251 (tests read rows as the app's clients do)
import yaml

from tests.conftest import StartWorker, chat, row
from tests.support import eventually

LIMITED = "one-at-a-time"


async def test_jobs_waiting_for_their_providers_limit_do_not_hold_up_other_models(
    db: asyncpg.Connection,
    submit: Any,
    simulator_url: str,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models.yaml"
    deployment = {"api_base": f"{simulator_url}/v1", "api_key": "os.environ/SIM_API_KEY"}
    models.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": LIMITED,
                        "litellm_params": {
                            "model": "openai/sim-model",
                            "max_parallel_requests": 1,
                            **deployment,
                        },
                    },
                    {
                        "model_name": "other",
                        "litellm_params": {"model": "openai/sim-model", **deployment},
                    },
                ]
            }
        )
    )
    slow = [
        await submit(
            chat(f"Slow {i} {uuid.uuid4()} [[sim tokens=60 tps=20]]", model="one-at-a-time")
        )
        for i in range(3)
    ]
    fast = [await submit(chat(f"Fast {i} {uuid.uuid4()}", model="other")) for i in range(3)]
    worker = start_worker("--drain", WORKER_MODELS_FILE=str(models), WORKER_CONCURRENCY="2")

    async def statuses(job_ids: list[uuid.UUID]) -> list[str]:
        return [(await row(db, job_id))["status"] for job_id in job_ids]

    async def fast_done() -> bool:
        return set(await statuses(fast)) == {"completed"}

    await eventually(fast_done, timeout_s=30, what="the other model's jobs completed")
    # Three slow jobs of 3 s each, one at a time: at most the first has finished.
    slow_now = await statuses(slow)
    assert slow_now.count("completed") <= 1, slow_now
    assert await worker.wait(timeout_s=60) == 0, worker.output
    assert set(await statuses(slow)) == {"completed"}
    assert '"provider_limit_wait"' in worker.output
