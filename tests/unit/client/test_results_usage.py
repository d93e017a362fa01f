"""An evaluation result's usage: the sum of its records', each prediction carrying its record's."""

from __future__ import annotations

import dspex
from dspex.client.results import evaluation_result, usage_of
from dspex.lm.usage import Usage
from dspex.schemas import ScoreRecord, UsageRecord


def test_result_usage_is_the_sum_of_the_records() -> None:
    records = [
        ScoreRecord(
            job_id="j", candidate_id="c", example_index=i, task_id=f"t{i}", outputs={"answer": str(i)},
            score=1.0, usage=UsageRecord(prompt_tokens=10 + i, completion_tokens=i, cost_usd=0.1 * i,
            lm_calls=1, cache_hits=i % 2),
        )
        for i in range(7)
    ]  # fmt: skip
    examples = [dspex.Example(answer=str(i)).with_inputs("answer") for i in range(7)]
    result = evaluation_result("c", records, examples, total=7, metric="m")
    assert result.usage == sum((usage_of(r.usage) for r in records), Usage())
    assert result.usage.cost_usd == 0.1 * 0 + 0.1 * 1 + 0.1 * 2 + 0.1 * 3 + 0.1 * 4 + 0.1 * 5 + 0.1 * 6
    assert (result.usage.prompt_tokens, result.usage.lm_calls, result.usage.cache_hits) == (91, 7, 3)
    for row, record in zip(result.records, records, strict=True):
        assert row.prediction is not None
        assert row.prediction._usage == usage_of(record.usage)
