"""``Dataset``: DSPy's base class for a dataset with seeded, sized train/dev/test splits.

A subclass fills ``self._train``, ``self._dev`` and ``self._test`` with records (dicts or examples);
``train``, ``dev`` and ``test`` give them shuffled by their seed, cut to their size, as ``Example``s
marked with ``dspy_uuid`` and ``dspy_split`` (and ``with_inputs(*input_keys)``). The same seed gives
the same split as DSPy's, since both shuffle with ``random.Random(seed)``.

    class QA(Dataset):
        def __init__(self, rows, **kwargs):
            super().__init__(input_keys=["question"], **kwargs)
            self._train, self._dev = rows[:100], rows[100:]

    QA(rows, train_seed=1, train_size=16).train
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from dspex.primitives.example import Example
from dspex.utils.dotdict import dotdict

__all__ = ["Dataset"]

_SPLITS = ("train", "dev", "test")


class Dataset:
    """Seeded, sized train/dev/test splits over records a subclass provides (see the module docs)."""

    _train: Iterable[Mapping[str, Any]]
    _dev: Iterable[Mapping[str, Any]]
    _test: Iterable[Mapping[str, Any]]

    def __init__(
        self,
        train_seed: int = 0,
        train_size: int | None = None,
        eval_seed: int = 0,
        dev_size: int | None = None,
        test_size: int | None = None,
        input_keys: list[str] | None = None,
    ) -> None:
        """``eval_seed`` seeds both the dev and the test split; a size of None keeps every record."""
        self.train_seed, self.train_size = train_seed, train_size
        self.dev_seed, self.dev_size = eval_seed, dev_size
        self.test_seed, self.test_size = eval_seed, test_size
        self.input_keys = input_keys or []
        self.do_shuffle = True
        self.name = type(self).__name__
        self._splits: dict[str, list[Example]] = {}

    def reset_seeds(
        self,
        train_seed: int | None = None,
        train_size: int | None = None,
        eval_seed: int | None = None,
        dev_size: int | None = None,
        test_size: int | None = None,
    ) -> None:
        """Change the given seeds and sizes (None keeps one); the splits are drawn again on next read."""
        if train_seed is not None:
            self.train_seed = train_seed
        if train_size is not None:
            self.train_size = train_size
        if eval_seed is not None:
            self.dev_seed = self.test_seed = eval_seed
        if dev_size is not None:
            self.dev_size = dev_size
        if test_size is not None:
            self.test_size = test_size
        self._splits.clear()

    @property
    def train(self) -> list[Example]:
        """The training split (drawn once, until :meth:`reset_seeds`)."""
        return self._split("train", self.train_size, self.train_seed)

    @property
    def dev(self) -> list[Example]:
        """The development split."""
        return self._split("dev", self.dev_size, self.dev_seed)

    @property
    def test(self) -> list[Example]:
        """The test split."""
        return self._split("test", self.test_size, self.test_seed)

    def _split(self, split: str, size: int | None, seed: int) -> list[Example]:
        if split not in self._splits:
            self._splits[split] = self._shuffle_and_sample(split, getattr(self, f"_{split}"), size, seed)
        return self._splits[split]

    def _shuffle_and_sample(
        self, split: str, data: Iterable[Mapping[str, Any]], size: int | None, seed: int = 0
    ) -> list[Example]:
        records = list(data)
        if self.do_shuffle:  # shuffled whatever the size, so a larger size extends a smaller one
            random.Random(seed).shuffle(records)
        examples = []
        for record in records[:size]:
            example = Example(**dict(record.items()), dspy_uuid=str(uuid.uuid4()), dspy_split=split)
            examples.append(example.with_inputs(*self.input_keys) if self.input_keys else example)
        return examples

    @classmethod
    def prepare_by_seed(
        cls,
        train_seeds: list[int] | None = None,
        train_size: int = 16,
        dev_size: int = 1000,
        divide_eval_per_seed: bool = True,
        eval_seed: int = 2023,
        **kwargs: Any,
    ) -> dotdict:
        """One training set per seed, and the dev split cut into one evaluation set per seed (or the
        whole dev split for each, ``divide_eval_per_seed=False``): ``train_sets``, ``eval_sets``."""
        seeds = train_seeds or [1, 2, 3, 4, 5]
        args: dict[str, Any] = {
            "train_size": train_size, "eval_seed": eval_seed, "dev_size": dev_size, "test_size": 0, **kwargs
        }  # fmt: skip
        dataset = cls(**args)
        eval_set = dataset.dev
        per_seed = dev_size // len(seeds) if divide_eval_per_seed else dev_size
        train_sets, eval_sets = [], []
        for index, seed in enumerate(seeds):
            dataset.reset_seeds(train_seed=seed)
            offset = index * per_seed if divide_eval_per_seed else 0
            eval_sets.append(eval_set[offset : offset + per_seed])
            train_sets.append(dataset.train)
        return dotdict(train_sets=train_sets, eval_sets=eval_sets)
