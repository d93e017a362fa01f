"""The Kafka client: ``dspex.Client`` submits evaluations to the cluster and reads their results.

    with dspex.Client("127.0.0.1:9092") as client, dspex.context(lm=lm):
        result = client.evaluate(program, devset, "exact_match:answer")

It imports confluent-kafka; ``import dspex`` does not import this package until ``dspex.Client``
is used.
"""

from __future__ import annotations

from dspex.client._client import Client
from dspex.client._cluster import WORKER_GROUPS
from dspex.client._publish import publish
from dspex.client._submit import Limits, Policy, Submission, build_submission

__all__ = ["WORKER_GROUPS", "Client", "Limits", "Policy", "Submission", "build_submission", "publish"]
