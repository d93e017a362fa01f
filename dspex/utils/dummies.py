"""``DummyLM``: a scripted LM for tests, with DSPy's constructor and behaviour; ``DummyVectorizer``.

    lm = DummyLM([{"answer": "red"}, {"answer": "blue"}])        # one answer per call, in order
    lm = DummyLM({"sky": {"answer": "blue"}})                    # the answer whose key is in the prompt
    lm = DummyLM([{"answer": "x"}], follow_examples=True)        # copy a demo whose input matches

Answers are written the way the adapter would want to read them (``[[ ## answer ## ]]`` sections for
ChatAdapter, a JSON object for JSONAdapter). No network, no cache: each call consumes the next answer.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic_core import to_jsonable_python

from dspex.lm.base import BaseLM
from dspex.lm.client import LMResponse
from dspex.lm.usage import Usage, record_usage

__all__ = ["DummyLM", "DummyVectorizer", "dummy_rm"]

_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_NO_MORE = {"answer": "No more responses"}


class DummyLM(BaseLM):
    """An LM that answers from a script (DSPy's ``dspy.utils.DummyLM``)."""

    def __init__(
        self,
        answers: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
        follow_examples: bool = False,
        reasoning: bool = False,
        adapter: Any = None,
    ) -> None:
        super().__init__("dummy", "chat", 0.0, 1000, True)
        self.answers: Iterator[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] = (
            answers if isinstance(answers, Mapping) else iter(list(answers))
        )
        self.follow_examples = follow_examples
        self.reasoning = reasoning
        if adapter is None:
            from dspex.adapters import ChatAdapter

            adapter = ChatAdapter()
        self.adapter = adapter

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], *, rollout_id: int | None = None, **overrides: Any
    ) -> LMResponse:
        """The next scripted answer (or, with ``n > 1``, the first of ``n``), formatted for the adapter."""
        text = self._answer([dict(m) for m in messages]) or ""
        record_usage(Usage(lm_calls=1), self.model, {})  # DSPy's DummyLM reports zero tokens
        return LMResponse(text=text, model="dummy", usage=Usage(lm_calls=1), finish_reason="stop")

    def _answer(self, messages: list[dict[str, Any]]) -> str | None:
        if self.follow_examples:
            return self._use_example(messages)
        if isinstance(self.answers, Mapping):
            last = str(messages[-1].get("content", ""))
            for key, values in self.answers.items():
                if key in last:
                    return self._format_answer_fields(values)
            return "No more responses"
        return self._format_answer_fields(next(self.answers, _NO_MORE))

    def _use_example(self, messages: list[dict[str, Any]]) -> str | None:
        """The demo answer whose user turn contains the current input's first paragraph."""
        # The header a message opens with: an input field's for user turns, an output field's for
        # assistant turns (the system message opens with prose, not a header).
        counts: dict[str, int] = {}
        for message in messages:
            opening = _HEADER.match(str(message.get("content", "")))
            if opening:
                counts[opening.group(1)] = counts.get(opening.group(1), 0) + 1
        if not counts:
            return None
        most = max(counts.values())
        # the current input opens one more message than the demo answers do
        outputs = [f"[[ ## {name} ## ]]" for name, count in counts.items() if count != most]
        current = str(messages[-1].get("content", "")).split("\n\n")[0]
        for asked, answered in zip(reversed(messages[:-1]), reversed(messages[1:]), strict=False):
            reply = str(answered.get("content", ""))
            if any(header in reply for header in outputs) and current in str(asked.get("content", "")):
                return reply
        return None

    def _format_answer_fields(self, values: Mapping[str, Any]) -> str:
        """The answer as the adapter writes an assistant turn (``format_field_with_value``): a JSON
        object for JSONAdapter, ``[[ ## name ## ]]`` sections for ChatAdapter, elements for XML."""
        from dspex.adapters.chat import FieldInfoWithName
        from dspex.signatures import OutputField

        write = getattr(self.adapter, "format_field_with_value", None)
        if write is None:
            return "\n\n".join(f"[[ ## {name} ## ]]\n{_plain(value)}" for name, value in values.items())
        fields = {FieldInfoWithName(name, OutputField()): value for name, value in values.items()}
        try:
            return str(write(fields, role="assistant"))
        except TypeError:  # adapters whose assistant turns look like their user turns take no role
            return str(write(fields))

    def get_convo(self, index: int) -> tuple[list[dict[str, Any]], list[str]]:
        """The messages and answers of the ``index``-th call in this LM's history."""
        entry = list(self.history)[index]
        return entry["messages"], entry["outputs"]


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable_python(value), ensure_ascii=False)


class DummyVectorizer:
    """Character n-gram counts hashed into ``max_length`` buckets: a deterministic toy embedder."""

    def __init__(self, max_length: int = 100, n_gram: int = 2) -> None:
        self.max_length = max_length
        self.n_gram = n_gram
        self.P = 10**9 + 7
        seeded = random.Random(123)
        self.coeffs = [seeded.randrange(1, self.P) for _ in range(n_gram)]

    def _hash(self, gram: str) -> int:
        value = 1
        for coeff, char in zip(self.coeffs, gram, strict=False):
            value = (value * coeff + ord(char)) % self.P
        return value % self.max_length

    def __call__(self, texts: Sequence[str]) -> Any:
        import numpy as np

        vectors = np.zeros((len(texts), self.max_length), dtype=np.float32)
        for row, text in enumerate(texts):
            for start in range(len(text) - self.n_gram + 1):
                vectors[row, self._hash(text[start : start + self.n_gram])] += 1
        # centred, then unit length (the epsilon keeps an empty text at zero instead of NaN)
        vectors -= vectors.mean(axis=1, keepdims=True)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-10
        return vectors


def dummy_rm(passages: Sequence[str] = ()) -> Any:
    """A retriever over ``passages`` by :class:`DummyVectorizer` similarity: ``rm(query, k=3)``."""
    if not passages:

        def nothing(query: str, *, k: int, **kwargs: Any) -> list[Any]:
            raise ValueError("No passages defined")

        return nothing
    vectorizer = DummyVectorizer(max(map(len, passages)) + 100)
    passage_vectors = vectorizer(passages)

    def retrieve(query: str, *, k: int, **kwargs: Any) -> list[Any]:
        from dspex.primitives import Prediction

        scores = passage_vectors @ vectorizer([query])[0]
        best = (-scores).argsort()[:k]
        return [Prediction(long_text=passages[i]) for i in best]

    return retrieve
