"""SQS: receiving, deleting and re-timing job messages. The only module that uses aiobotocore."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from worker.batching import Batcher
from worker.jobs import Delivery

log = structlog.get_logger(__name__)

MAX_BATCH = 10  # SQS's limit per receive and per batch call
_DEPTH_ATTRIBUTES = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}


class QueueUnavailable(Exception):
    """SQS could not be reached or throttled us; the caller backs off and tries again."""


class JobQueue:
    """The job queue; open it with `JobQueue.open(...)` as an async context manager."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url
        self._deletes = Batcher(
            self._delete_batch,
            max_size=MAX_BATCH,
            interrupted=lambda: QueueUnavailable("SQS delete interrupted"),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, queue_url: str, *, region: str, endpoint_url: str | None = None
    ) -> AsyncIterator[JobQueue]:
        config = AioConfig(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            # A long poll holds the request for up to 20 s; leave headroom above it.
            read_timeout=30,
            max_pool_connections=20,
        )
        session = get_session()
        async with session.create_client(
            "sqs", region_name=region, endpoint_url=endpoint_url, config=config
        ) as client:
            yield cls(client, queue_url)

    async def receive(
        self, max_messages: int, *, wait_s: int, visibility_timeout_s: int
    ) -> list[Delivery]:
        """Long-poll for up to `max_messages` (at most 10) messages."""
        async with _unavailable_on_error("receive"):
            response = await self._client.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=max(1, min(max_messages, MAX_BATCH)),
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=visibility_timeout_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        return [parse_message(message) for message in response.get("Messages", [])]

    async def delete(self, delivery: Delivery) -> None:
        """Delete a handled message, batched with the others that finish meanwhile."""
        await self._deletes.submit(delivery)

    async def _delete_batch(self, deliveries: Sequence[Delivery]) -> list[None]:
        async with _unavailable_on_error("delete"):
            response = await self._client.delete_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": delivery.receipt_handle}
                    for index, delivery in enumerate(deliveries)
                ],
            )
        for failure in response.get("Failed", []):
            # A stale handle (the message was received again meanwhile) is not an error here.
            log.info("delete_refused", code=failure.get("Code"))
        return [None] * len(deliveries)

    async def set_visibility(self, delivery: Delivery, *, seconds: int) -> None:
        """Make the message visible again after `seconds` (0: at once)."""
        async with _unavailable_on_error("change_visibility"):
            await self._client.change_message_visibility(
                QueueUrl=self._url,
                ReceiptHandle=delivery.receipt_handle,
                VisibilityTimeout=max(0, min(seconds, 43_200)),
            )

    async def extend(self, deliveries: Sequence[Delivery], *, seconds: int) -> None:
        """Extend the visibility of running jobs' messages, in batches of ten."""
        for start in range(0, len(deliveries), MAX_BATCH):
            chunk = deliveries[start : start + MAX_BATCH]
            async with _unavailable_on_error("extend"):
                response = await self._client.change_message_visibility_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {
                            "Id": str(index),
                            "ReceiptHandle": delivery.receipt_handle,
                            "VisibilityTimeout": seconds,
                        }
                        for index, delivery in enumerate(chunk)
                    ],
                )
            for failure in response.get("Failed", []):
                # A message deleted or re-received meanwhile has a stale handle: harmless.
                log.info("visibility_extend_refused", code=failure.get("Code"))

    async def send(self, job_id: uuid.UUID) -> None:
        """Send a job's message as the app does: `{"jobId": "<uuid>"}`."""
        async with _unavailable_on_error("send"):
            await self._client.send_message(
                QueueUrl=self._url, MessageBody=json.dumps({"jobId": str(job_id)})
            )

    @staticmethod
    async def create(
        name: str, *, region: str, endpoint_url: str | None, visibility_timeout_s: int = 60
    ) -> str:
        """Create (or find) queue `name`; returns its URL. For local stacks and the demo."""
        async with get_session().create_client(
            "sqs", region_name=region, endpoint_url=endpoint_url
        ) as client:
            response = await client.create_queue(
                QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout_s)}
            )
        return str(response["QueueUrl"])

    async def depth(self) -> dict[str, dict[str, int]]:
        """Messages by state in the queue and, where a redrive policy names one, its DLQ."""
        counts = {"jobs": await self._counts(self._url)}
        dead_letters = await self._dead_letter_url()
        if dead_letters is not None:
            counts["dlq"] = await self._counts(dead_letters)
        return counts

    async def _counts(self, url: str) -> dict[str, int]:
        async with _unavailable_on_error("get_queue_attributes"):
            response = await self._client.get_queue_attributes(
                QueueUrl=url, AttributeNames=list(_DEPTH_ATTRIBUTES)
            )
        attributes = response.get("Attributes", {})
        return {state: int(attributes.get(name, 0)) for name, state in _DEPTH_ATTRIBUTES.items()}

    async def _dead_letter_url(self) -> str | None:
        async with _unavailable_on_error("get_queue_attributes"):
            response = await self._client.get_queue_attributes(
                QueueUrl=self._url, AttributeNames=["RedrivePolicy"]
            )
            policy = response.get("Attributes", {}).get("RedrivePolicy")
            if not policy:
                return None
            arn = json.loads(policy)["deadLetterTargetArn"]
            _, _, _, _, account, name = arn.split(":")
            found = await self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
        return str(found["QueueUrl"])

    async def ping(self) -> None:
        async with _unavailable_on_error("get_queue_attributes"):
            await self._client.get_queue_attributes(
                QueueUrl=self._url, AttributeNames=["ApproximateNumberOfMessages"]
            )


@contextlib.asynccontextmanager
async def _unavailable_on_error(operation: str) -> AsyncIterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError, OSError) as exc:
        raise QueueUnavailable(f"SQS {operation} failed: {exc}") from exc


def parse_message(message: dict[str, Any]) -> Delivery:
    """Turn an SQS message into a Delivery; a body that can never name a job is poison."""
    attributes = message.get("Attributes", {})
    sent_ms = attributes.get("SentTimestamp")
    job_id, poison_reason = parse_body(message.get("Body", ""))
    return Delivery(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
        sent_at_s=int(sent_ms) / 1000 if sent_ms else None,
        job_id=job_id,
        poison_reason=poison_reason,
    )


def parse_body(body: str) -> tuple[uuid.UUID | None, str | None]:
    """`{"jobId": "<uuid>"}`, or the legacy bare uuid (plain or as a JSON string)."""
    text = body.strip()
    try:
        value: object = json.loads(text)
    except ValueError:
        job_id = _uuid_or_none(text)  # the legacy bare id is not JSON
        return (job_id, None) if job_id else (None, _NOT_A_BODY)
    if isinstance(value, dict):
        if "jobId" not in value:
            return None, "body has no jobId"
        value = value["jobId"]
    if not isinstance(value, str):
        return None, "jobId is not a string"
    job_id = _uuid_or_none(value)
    return (job_id, None) if job_id else (None, "jobId is not a uuid")


_NOT_A_BODY = "body is neither JSON nor a job id"


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
