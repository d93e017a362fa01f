"""Compiled KNNFewShot and Ensemble programs save as JSON and load back, or refuse with a clear reason.

No LM is called: the KNN embeds with a module-level vectorizer of this file (letter counts), and the
ensemble's programs are never run.
"""

from __future__ import annotations

from typing import Any

import pytest

from dspex.errors import ConfigurationError, ProgramLoadError, SecurityPolicyError
from dspex.lm import LM
from dspex.modules import Predict, majority
from dspex.optimizers import Ensemble, EnsembledProgram, KNNFewShot
from dspex.optimizers.labeled import labeled_program
from dspex.primitives import Example
from dspex.primitives.saving import load_program
from dspex.serialization import dump_program

THIS_MODULE = __name__


def letter_counts(texts: list[str]) -> list[list[float]]:
    """A vectorizer importable by path: how often each of a few characters occurs."""
    return [[float(text.count(ch)) for ch in "0123456789+-"] for text in texts]


def trainset(count: int = 6) -> list[Example]:
    return [
        Example(question=f"What is {i} + {i + 1}?", answer=str(2 * i + 1)).with_inputs("question")
        for i in range(count)
    ]


def knn_program(**knobs: Any) -> Any:
    optimizer = KNNFewShot(2, trainset(), vectorizer=letter_counts, max_bootstrapped_demos=1, **knobs)
    return optimizer.compile(Predict("question -> answer"))


def three_programs() -> list[Any]:
    student = Predict("question -> answer")
    return [labeled_program(student, trainset()[i : i + 2], 2) for i in range(3)]


def test_a_knn_program_round_trips_with_its_trainset_and_vectors() -> None:
    saved = dump_program(knn_program())
    loaded = load_program(saved, allow_modules=[THIS_MODULE])
    assert dump_program(loaded) == saved
    assert len(saved["state"]["vectors"]) == len(trainset())  # no re-embedding on a worker


def test_a_knn_vectorizer_outside_the_allow_list_is_refused_at_load() -> None:
    saved = dump_program(knn_program())
    with pytest.raises(SecurityPolicyError):
        load_program(saved, allow_modules=["somewhere_else"])


def test_a_knn_program_built_with_an_lm_object_cannot_be_saved() -> None:
    optimizer = KNNFewShot(2, trainset(), vectorizer=letter_counts, max_bootstrapped_demos=1)
    program = optimizer.compile(Predict("question -> answer"))
    program._setup.knn.lm = LM("openai/sim", api_base="http://127.0.0.1:9/v1", api_key="secret-key")
    with pytest.raises(ConfigurationError, match="lm=") as caught:
        dump_program(program)
    assert "secret-key" not in str(caught.value)


def test_an_ensemble_round_trips_with_its_reduce_function() -> None:
    # Ensemble(deterministic=True) fails as DSPy's does; the program itself offers the option.
    program = EnsembledProgram(three_programs(), reduce_fn=majority, size=2, deterministic=True)
    saved = dump_program(program)
    loaded = load_program(saved, allow_modules=())
    assert dump_program(loaded) == saved
    assert loaded.reduce_fn is majority and loaded.size == 2 and len(loaded.programs) == 3


def test_an_ensemble_with_a_lambda_reduce_function_cannot_be_saved() -> None:
    program = Ensemble(reduce_fn=lambda predictions: predictions[0]).compile(three_programs())
    with pytest.raises(ConfigurationError, match="reduce_fn"):
        dump_program(program)


def test_a_saved_ensemble_with_an_impossible_size_is_refused() -> None:
    saved = dump_program(Ensemble(reduce_fn=majority).compile(three_programs()))
    _set_state(saved, size=9)
    with pytest.raises(ProgramLoadError, match="size=9"):
        load_program(saved, allow_modules=())


def _set_state(saved: dict[str, Any], **changes: Any) -> None:
    saved["state"].update(changes)
