"""DSPy's teleprompter API on dspex's optimizers: the base class, constructor and compile arguments,
the compiled program's shape, DSPy's max_errors rule, ``dspex.teleprompt.utils`` and the Embedder.

Programs run on a scripted DummyLM (no network) or on fake programs that raise.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from dspex_optimizer_fakes import sim_lm_of

import dspex
from dspex.errors import ConfigurationError
from dspex.evaluate import EvaluationResult
from dspex.lm.embedder import Embedder
from dspex.modules import Predict
from dspex.optimizers import (
    KNN,
    BetterTogether,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    BootstrapFinetune,
    Ensemble,
    EnsembledProgram,
    KNNFewShot,
    LabeledFewShot,
    Optimizer,
    Teleprompter,
)
from dspex.primitives import Example, Module, Prediction
from dspex.testing import SimulatedLMServer
from dspex.utils import DummyLM, DummyVectorizer


def qa(question: str, answer: str) -> Example:
    return Example(question=question, answer=answer).with_inputs("question")


TRAIN = [qa("What is 1 + 1?", "2"), qa("What is 2 + 2?", "4"), qa("What is 3 + 3?", "6")]


def exact(example: Example, prediction: Prediction, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


class Wrapper(Module):
    def __init__(self) -> None:
        self.predictor = Predict("question -> answer")

    def forward(self, **inputs: Any) -> Prediction:
        return self.predictor(**inputs)


class Failing(Module):
    """Same structure as Wrapper; every call raises."""

    def __init__(self, message: str = "teacher is broken") -> None:
        self.predictor = Predict("question -> answer")
        self.message = message

    def forward(self, **inputs: Any) -> Prediction:
        raise RuntimeError(self.message)


def answers(*values: str) -> DummyLM:
    return DummyLM([{"answer": value} for value in values])


# -- the base class ------------------------------------------------------------------------------


class Plain(Teleprompter):
    def __init__(self, depth: int, name: str) -> None:
        super().__init__()
        self.depth, self.name = depth, name

    def compile(self, student: Any, *, trainset: Any = None, teacher: Any = None, **kwargs: Any) -> Any:
        return ("compiled", student, len(trainset))


def test_teleprompter_is_optimizer_and_reachable_by_dspys_path() -> None:
    from dspex.teleprompt.teleprompt import Teleprompter as ByPath

    assert ByPath is Teleprompter is Optimizer and dspex.Teleprompter is Teleprompter
    params = inspect.signature(Teleprompter.compile).parameters
    assert list(params)[:5] == ["self", "student", "trainset", "teacher", "valset"]


def test_get_params_is_the_subclass_attributes_and_acompile_runs_a_sync_compile() -> None:
    plain = Plain(3, "x")
    assert plain.get_params() == {"depth": 3, "name": "x"}
    assert asyncio.run(plain.acompile("s", trainset=[1, 2])) == ("compiled", "s", 2)
    with pytest.raises(NotImplementedError):
        Teleprompter().compile("student", trainset=[])


# -- BootstrapFewShot ----------------------------------------------------------------------------


def test_bootstrap_takes_dspys_positional_arguments_and_keeps_them_as_attributes() -> None:
    optimizer = BootstrapFewShot(exact, 0.5, None, 2, 3, 2, 5)
    assert optimizer.metric is exact and optimizer.metric_threshold == 0.5
    assert optimizer.teacher_settings == {}
    assert (optimizer.max_bootstrapped_demos, optimizer.max_labeled_demos) == (2, 3)
    assert (optimizer.max_rounds, optimizer.max_errors) == (2, 5)
    assert optimizer.get_params()["max_rounds"] == 2


def test_compiled_program_is_marked_and_its_bootstrapped_demos_are_augmented_examples() -> None:
    with dspex.context(lm=answers("2", "4")):
        optimizer = BootstrapFewShot(metric=exact, max_bootstrapped_demos=2, max_labeled_demos=2)
        program = optimizer.compile(Wrapper(), trainset=TRAIN)
    assert program._compiled is True
    demos = program.predictor.demos
    assert all(isinstance(demo, Example) for demo in demos)
    assert [demo.get("augmented") for demo in demos] == [True, True]
    assert [demo.answer for demo in demos] == ["2", "4"]


def test_a_compiled_teacher_is_used_as_it_is() -> None:
    teacher = Wrapper()
    teacher.predictor.demos = [qa("What is 9 + 9?", "18")]
    teacher._compiled = True  # type: ignore[attr-defined]
    lm = answers("2")
    with dspex.context(lm=lm):
        BootstrapFewShot(metric=exact, max_bootstrapped_demos=1).compile(
            Wrapper(), trainset=TRAIN, teacher=teacher
        )
    prompt = str(lm.history[0]["messages"])
    assert "9 + 9" in prompt  # its own demo, not labeled ones from the trainset


def test_max_errors_raises_the_error_that_reaches_it() -> None:
    optimizer = BootstrapFewShot(metric=exact, max_bootstrapped_demos=1, max_labeled_demos=0, max_errors=2)
    with dspex.context(lm=answers()), pytest.raises(RuntimeError, match="teacher is broken"):
        optimizer.compile(Wrapper(), trainset=TRAIN, teacher=Failing())
    assert optimizer.history is not None and "max_errors=2" in (optimizer.history.stopped or "")


def test_fewer_errors_than_max_errors_are_logged_and_skipped() -> None:
    optimizer = BootstrapFewShot(metric=exact, max_bootstrapped_demos=1, max_labeled_demos=1, max_errors=4)
    with dspex.context(lm=answers()):
        program = optimizer.compile(Wrapper(), trainset=TRAIN, teacher=Failing())
    assert optimizer.error_count == 3
    assert [demo.get("augmented") for demo in program.predictor.demos] == [None]  # one labeled demo


def test_max_errors_none_reads_the_setting() -> None:
    optimizer = BootstrapFewShot(metric=exact, max_bootstrapped_demos=1, max_labeled_demos=0)
    with dspex.context(lm=answers(), max_errors=1), pytest.raises(RuntimeError, match="teacher is broken"):
        optimizer.compile(Wrapper(), trainset=TRAIN, teacher=Failing())


def test_a_trainset_smaller_than_max_bootstrapped_demos_is_fine() -> None:
    with dspex.context(lm=answers("2")):
        program = BootstrapFewShot(metric=exact).compile(Wrapper(), trainset=TRAIN[:1])
    assert [demo.answer for demo in program.predictor.demos] == ["2"]


# -- random search -------------------------------------------------------------------------------


def test_random_search_takes_dspys_arguments_and_counts_errors_per_bootstrap() -> None:
    optimizer = BootstrapFewShotWithRandomSearch(exact, None, 1, 1, 1, 2)
    assert (optimizer.num_candidate_sets, optimizer.max_num_samples, optimizer.min_num_samples) == (2, 1, 1)
    # Every teacher run fails: 3 per candidate (under max_errors=4 each), 12 in all.
    with dspex.context(lm=answers()):
        best = optimizer.compile(Wrapper(), trainset=TRAIN, teacher=Failing(), valset=TRAIN[:1])
    assert len(best.candidate_programs) == 5


def test_restrict_may_be_a_single_use_iterator_and_must_name_a_seed() -> None:
    optimizer = BootstrapFewShotWithRandomSearch(exact, max_bootstrapped_demos=1, num_candidate_programs=1)
    with dspex.context(lm=answers("2")):
        best = optimizer.compile(Wrapper(), trainset=TRAIN[:1], restrict=iter([-3]))
    assert [entry["seed"] for entry in best.candidate_programs] == [-3]
    with pytest.raises(ValueError, match="restrict"):
        optimizer.compile(Wrapper(), trainset=TRAIN[:1], restrict=[99])


# -- LabeledFewShot, Ensemble ----------------------------------------------------------------------


def test_labeled_few_shot_on_an_empty_trainset_gives_the_reset_student() -> None:
    student = Wrapper()
    student.predictor.demos = [TRAIN[0]]
    program = LabeledFewShot(4).compile(student, trainset=[])
    assert program is not student and program.predictor.demos == []


def test_ensemble_deterministic_fails_as_dspys_and_the_program_still_offers_it() -> None:
    with pytest.raises(AssertionError, match="deterministic ensemble"):
        Ensemble(deterministic=True)
    programs = [Wrapper() for _ in range(4)]
    program = EnsembledProgram(programs, size=2, deterministic=True)
    assert program._chosen({"question": "a"}) == program._chosen({"question": "a"})


# -- KNN, KNNFewShot, Embedder -------------------------------------------------------------------


def test_knn_with_an_embedder_over_a_function_embeds_at_construction() -> None:
    np = pytest.importorskip("numpy")
    knn = KNN(2, TRAIN, Embedder(DummyVectorizer()))
    assert isinstance(knn.trainset_vectors, np.ndarray) and knn.trainset_vectors.shape[0] == 3
    nearest = knn(question="What is 3 + 3?")
    assert len(nearest) == 2 and nearest[0].answer == "6"


def test_knn_few_shot_exposes_dspys_knn_attribute() -> None:
    optimizer = KNNFewShot(2, TRAIN, dspex.Embedder(DummyVectorizer()), max_bootstrapped_demos=1)
    assert optimizer.KNN is optimizer.knn and optimizer.KNN.k == 2 and len(optimizer.KNN.trainset) == 3
    assert optimizer.few_shot_bootstrap_args == {"max_bootstrapped_demos": 1}


def test_embedder_over_sync_and_async_functions_in_batches() -> None:
    seen: list[int] = []

    def lengths(texts: list[str]) -> list[list[float]]:
        seen.append(len(texts))
        return [[float(len(text)), 1.0] for text in texts]

    async def async_lengths(texts: list[str]) -> list[list[float]]:
        return lengths(texts)

    rows = Embedder(lengths, batch_size=2)(["a", "bb", "ccc"])
    assert [list(map(float, row)) for row in rows] == [[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]] and seen == [2, 1]
    assert list(map(float, Embedder(async_lengths)("abcd"))) == [4.0, 1.0]
    with pytest.raises(ConfigurationError, match="strings"):
        Embedder(lengths)([1, 2])  # type: ignore[list-item]


def test_embedder_over_an_lm_uses_its_embeddings_endpoint(sim: SimulatedLMServer) -> None:
    rows = asyncio.run(Embedder(sim_lm_of(sim)).acall(["hello", "world"]))
    assert len(rows) == 2 and len(rows[0]) > 0


# -- dspex.teleprompt.utils ------------------------------------------------------------------------


def test_eval_candidate_program_full_minibatch_and_failure() -> None:
    from dspex.teleprompt.utils import eval_candidate_program

    calls: list[tuple[int, dict[str, Any]]] = []

    def evaluate(program: Any, *, devset: list[Any], callback_metadata: dict[str, Any]) -> float:
        calls.append((len(devset), callback_metadata))
        return 1.0

    assert eval_candidate_program(10, [1, 2, 3], "p", evaluate) == 1.0
    assert eval_candidate_program(2, [1, 2, 3], "p", evaluate) == 1.0
    assert calls == [(3, {"metric_key": "eval_full"}), (2, {"metric_key": "eval_minibatch"})]

    def broken(program: Any, **kwargs: Any) -> float:
        raise ValueError("no")

    failed = eval_candidate_program(2, [1, 2, 3], "p", broken)
    assert isinstance(failed, EvaluationResult) and failed.score == 0.0


def test_create_n_fewshot_demo_sets_makes_dspys_sets() -> None:
    from dspex.teleprompt.utils import create_n_fewshot_demo_sets

    with dspex.context(lm=answers(*["2", "4", "6"] * 4)):
        sets = create_n_fewshot_demo_sets(
            Wrapper(),
            5,
            TRAIN,
            max_labeled_demos=2,
            max_bootstrapped_demos=1,
            metric=exact,
            teacher_settings={},
        )
    assert list(sets) == [0] and len(sets[0]) == 5
    zero_shot, labeled, unshuffled = sets[0][:3]
    assert zero_shot == [] and len(labeled) == 2 and not any(demo.get("augmented") for demo in labeled)
    assert unshuffled[0].get("augmented") is True


# -- dspex.teleprompt.bootstrap_trace ------------------------------------------------------------


def test_bootstrap_trace_data_keeps_each_runs_prediction_trace_and_score() -> None:
    from dspex.teleprompt.bootstrap_trace import bootstrap_trace_data

    with dspex.context(lm=answers("2", "5")):
        data = bootstrap_trace_data(Wrapper(), TRAIN[:2], metric=exact, num_threads=1)
    assert [entry["example_ind"] for entry in data] == [0, 1]
    assert [entry["score"] for entry in data] == [True, False]
    predictor, inputs, outputs = data[0]["trace"][0]
    assert (
        isinstance(predictor, Predict) and inputs == {"question": "What is 1 + 1?"} and outputs.answer == "2"
    )


def test_bootstrap_trace_data_captures_parse_failures_and_crashes_as_asked() -> None:
    from dspex.teleprompt.bootstrap_trace import FailedPrediction, bootstrap_trace_data

    with dspex.context(lm=DummyLM([{"other": "x"}])):
        [entry] = bootstrap_trace_data(
            Wrapper(), TRAIN[:1], metric=exact, num_threads=1, capture_failed_parses=True
        )
    assert isinstance(entry["prediction"], FailedPrediction) and entry["score"] == -1
    assert entry["trace"][-1][2] is entry["prediction"]

    [crashed] = bootstrap_trace_data(Failing(), TRAIN[:1], num_threads=1, capture_crashes=True)
    assert "RuntimeError: teacher is broken" in crashed["prediction"].completion_text
    assert bootstrap_trace_data(Failing(), TRAIN[:1], num_threads=1, raise_on_error=False) == []
    with pytest.raises(ValueError, match="example 0"):
        bootstrap_trace_data(Failing(), TRAIN[:1], num_threads=1)


# -- BootstrapFinetune, BetterTogether -----------------------------------------------------------


class _Job:
    def __init__(self, result: Any) -> None:
        self._result = result

    def result(self) -> Any:
        return self._result


class TunableLM(DummyLM):
    """A DummyLM that "fine-tunes" into a new DummyLM and remembers the data it was given."""

    def __init__(self, values: list[str], model: str = "dummy") -> None:
        super().__init__([{"answer": value} for value in values])
        self.model = model
        self.trained_on: list[Any] = []

    def finetune(self, train_data: list[Any], train_data_format: str, train_kwargs: Any) -> _Job:
        self.trained_on = list(train_data)
        return _Job(TunableLM(["4", "4", "4"], model="dummy-tuned"))


def test_bootstrap_finetune_trains_each_lm_on_the_passing_traces_and_sets_the_tuned_lm() -> None:
    lm = TunableLM(["2", "5"])
    student = Wrapper()
    student.set_lm(lm)
    tuned = BootstrapFinetune(metric=exact).compile(student, trainset=TRAIN[:2])
    assert tuned._compiled is True and tuned.predictor.lm.model == "dummy-tuned"
    assert len(lm.trained_on) == 1  # the second run failed the metric
    assert "What is 1 + 1?" in str(lm.trained_on[0])


def test_bootstrap_finetune_needs_every_predictor_lm_and_an_lm_that_can_finetune() -> None:
    with pytest.raises(ValueError, match="does not have an LM assigned"):
        BootstrapFinetune().compile(Wrapper(), trainset=TRAIN[:1])
    student = Wrapper()
    student.set_lm(answers("2"))
    with pytest.raises(ConfigurationError, match="cannot be fine-tuned"):
        BootstrapFinetune().compile(student, trainset=TRAIN[:1])


def test_better_together_runs_the_strategy_and_keeps_the_best_program() -> None:
    lm = TunableLM(["1"] * 10)  # wrong before tuning ("4" is right for the valset below), right after
    student = Wrapper()
    student.set_lm(lm)
    labeled = LabeledFewShot(k=1)
    optimizer = BetterTogether(metric=exact, p=labeled, w=BootstrapFinetune())
    best = optimizer.compile(student, trainset=TRAIN, valset=[TRAIN[1]], strategy="p -> w", seed=0)
    assert [c["strategy"] for c in best.candidate_programs] == ["p -> w", "", "p"]
    assert best.candidate_programs[0]["score"] == 100.0 and best.flag_compilation_error_occurred is False
    assert best.predictor.lm.model == "dummy-tuned" and best._compiled is True


def test_better_together_checks_its_input_and_stops_at_a_failing_step() -> None:
    optimizer = BetterTogether(metric=exact)
    assert set(optimizer.optimizers) == {"p", "w"}
    with pytest.raises(TypeError, match="must be a Teleprompter"):
        BetterTogether(metric=exact, p="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid optimizer keys"):
        optimizer._prepare_strategy("p -> x")
    with pytest.raises(ValueError, match="not allowed"):
        optimizer._validate_compile_args(optimizer.optimizers["p"], "p", {"student": Wrapper()})
    with pytest.raises(ValueError, match="num_trialz"):
        optimizer._prepare_optimizer_compile_args({"p": {"num_trialz": 3}}, None)
    student = Wrapper()
    student.set_lm(answers(*["1"] * 10))  # a DummyLM cannot be fine-tuned: the "w" step fails
    best = BetterTogether(metric=exact, w=BootstrapFinetune()).compile(
        student, trainset=TRAIN, valset_ratio=0.0, strategy="w"
    )
    assert best.flag_compilation_error_occurred is True and len(best.candidate_programs) == 1
