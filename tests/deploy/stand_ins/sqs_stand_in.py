"""A stand-in for ElasticMQ (the compose stack's local SQS): moto's SQS server, with the
queues of the mounted config/elasticmq.conf (names, visibility, dead-letter queue and
maxReceiveCount) created before it reports ready (/tmp/ready, the override's healthcheck).

It reads only the parts of ElasticMQ's HOCON file that the stack uses."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import boto3
from moto.server import ThreadedMotoServer

CONF = Path(os.environ.get("ELASTICMQ_CONF", "/opt/elasticmq.conf"))
PORT = 9324


def queues(conf: str) -> dict[str, dict[str, str]]:
    """{queue: {visibility, dlq, max_receive}} from the `queues { ... }` block."""
    text = re.sub(r"#[^\n]*", "", conf)
    start = text.index("queues {") + len("queues {")
    depth, index, found = 1, start, {}
    name_at = re.compile(r"\s*([A-Za-z0-9_-]+)\s*\{")
    while depth and index < len(text):
        match = name_at.match(text, index)
        if depth == 1 and match:
            body_start = match.end()
            level, cursor = 1, body_start
            while level:
                level += {"{": 1, "}": -1}.get(text[cursor], 0)
                cursor += 1
            body = text[body_start : cursor - 1]
            settings: dict[str, str] = {}
            if visibility := re.search(r"defaultVisibilityTimeout\s*=\s*(\d+)", body):
                settings["visibility"] = visibility[1]
            if dlq := re.search(r'deadLettersQueue\s*\{[^}]*name\s*=\s*"([^"]+)"', body):
                settings["dlq"] = dlq[1]
                receives = re.search(r"maxReceiveCount\s*=\s*(\d+)", body)
                settings["max_receive"] = receives[1] if receives else "5"
            found[match[1]] = settings
            index = cursor
            continue
        char = text[index]
        depth += {"{": 1, "}": -1}.get(char, 0)
        index += 1
    return found


def main() -> int:
    account = re.search(r"accountId\s*=\s*(\d+)", CONF.read_text())
    os.environ.setdefault("MOTO_ACCOUNT_ID", account[1] if account else "000000000000")
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=PORT)  # noqa: S104
    server.start()
    sqs = boto3.client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{PORT}",
        region_name="us-east-1",
        aws_access_key_id="stand-in",
        aws_secret_access_key="stand-in",
    )
    wanted = queues(CONF.read_text())
    # Dead-letter queues first: a redrive policy names an existing queue's ARN.
    for name in sorted(wanted, key=lambda queue: "dlq" in wanted[queue]):
        settings = wanted[name]
        attributes = {"VisibilityTimeout": settings.get("visibility", "30")}
        if "dlq" in settings:
            dlq_url = sqs.get_queue_url(QueueName=settings["dlq"])["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
                    "maxReceiveCount": settings["max_receive"],
                }
            )
        sqs.create_queue(QueueName=name, Attributes=attributes)
        print(f"queue {name} {attributes}", flush=True)
    Path("/tmp/ready").touch()  # noqa: S108

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
