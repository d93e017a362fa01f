"""``DataLoader``: DSPy's loaders of examples from files, data frames and the Hugging Face Hub.

    rows = DataLoader().from_csv("qa.csv", input_keys=("question",))
    splits = DataLoader().train_test_split(rows, train_size=0.8, random_state=0)

CSV and JSON (an array, or one object per line) are read with the standard library; a CSV column
whose every value reads as an integer (or a number) becomes ints (or floats), as the Hugging Face
reader DSPy uses would type it, and an empty cell is None. Parquet needs ``pyarrow``,
``from_huggingface`` the ``datasets`` package, ``from_pandas`` a pandas data frame. The splits and
samples draw from ``random`` exactly as DSPy's do, so one seed gives DSPy's split.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dspex.configuration import current_settings
from dspex.datasets.dataset import Dataset
from dspex.errors import ConfigurationError
from dspex.primitives.example import Example

__all__ = ["DataLoader"]


class DataLoader(Dataset):
    """Examples from CSV, JSON, Parquet, pandas or the Hugging Face Hub, and DSPy's split helpers."""

    def __init__(self) -> None:
        # DSPy's DataLoader is a Dataset in name only: it keeps no splits of its own.
        pass

    def from_csv(
        self, file_path: str | Path, fields: list[str] | None = None, input_keys: tuple[str, ...] = ()
    ) -> list[Example]:
        """One example per row of a CSV file with a header line."""
        with open(file_path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
        typed = _typed_columns(rows, columns)
        return _examples(typed, fields or columns, input_keys, file_path)

    def from_json(
        self, file_path: str | Path, fields: list[str] | None = None, input_keys: tuple[str, ...] = ()
    ) -> list[Example]:
        """One example per object of a JSON array, or per line of a JSON Lines file."""
        rows = _json_rows(Path(file_path))
        columns = list(dict.fromkeys(key for row in rows for key in row))
        return _examples(rows, fields or columns, input_keys, file_path)

    def from_parquet(
        self, file_path: str | Path, fields: list[str] | None = None, input_keys: tuple[str, ...] = ()
    ) -> list[Example]:
        """One example per row of a Parquet file (needs ``pyarrow``)."""
        try:
            import pyarrow.parquet as parquet
        except ImportError as exc:
            raise ConfigurationError(
                f"DataLoader.from_parquet({str(file_path)!r}) needs pyarrow: pip install pyarrow"
            ) from exc
        table = parquet.read_table(file_path)
        return _examples(table.to_pylist(), fields or list(table.column_names), input_keys, file_path)

    def from_pandas(
        self, df: Any, fields: list[str] | None = None, input_keys: tuple[str, ...] = ()
    ) -> list[Example]:
        """One example per row of a pandas data frame."""
        rows = [dict(row) for _, row in df.iterrows()]
        return _examples(rows, fields or list(df.columns), input_keys, "the data frame")

    def from_huggingface(
        self,
        dataset_name: str,
        *args: Any,
        input_keys: tuple[str, ...] = (),
        fields: tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> dict[str, list[Example]] | list[Example]:
        """A Hub dataset's splits as ``{split: [examples]}`` (a list when one split was asked for)."""
        if fields is not None and not isinstance(fields, tuple):
            raise ConfigurationError(f"from_huggingface: fields must be a tuple of names, got {fields!r}")
        if not isinstance(input_keys, tuple):
            raise ConfigurationError(
                f"from_huggingface: input_keys must be a tuple of names, got {input_keys!r}"
            )
        try:
            from datasets import load_dataset
        except ImportError as exc:
            raise ConfigurationError(
                f"DataLoader.from_huggingface({dataset_name!r}) needs the datasets package: "
                "pip install datasets"
            ) from exc
        loaded = load_dataset(dataset_name, *args, **kwargs)
        if isinstance(loaded, list) and isinstance(kwargs.get("split"), list):
            loaded = dict(zip(kwargs["split"], loaded, strict=True))
        if not hasattr(loaded, "keys"):  # one split
            return _hub_examples(loaded, fields, input_keys, dataset_name)
        return {name: _hub_examples(loaded[name], fields, input_keys, dataset_name) for name in loaded}

    def from_rm(self, num_samples: int, fields: list[str], input_keys: list[str]) -> list[Example]:
        """Examples from the configured retrieval model's ``get_objects(num_samples=, fields=)``."""
        rm = current_settings().rm
        if rm is None:
            raise ConfigurationError("from_rm needs a retrieval model: dspex.configure(rm=...)")
        get_objects = getattr(rm, "get_objects", None)
        if get_objects is None:
            raise ConfigurationError(
                f"from_rm: the retrieval model ({type(rm).__name__}) has no "
                "get_objects(num_samples=, fields=)"
            )
        rows = get_objects(num_samples=num_samples, fields=fields)
        return _examples(rows, fields, tuple(input_keys), "the retrieval model")

    def sample(self, dataset: list[Example], n: int, *args: Any, **kwargs: Any) -> list[Example]:
        """``n`` examples drawn without replacement (``random.sample``)."""
        if not isinstance(dataset, list):
            raise ConfigurationError(
                f"sample: dataset must be a list of examples, got {type(dataset).__name__}"
            )
        return random.sample(dataset, n, *args, **kwargs)

    def train_test_split(
        self,
        dataset: list[Example],
        train_size: int | float = 0.75,
        test_size: int | float | None = None,
        random_state: int | None = None,
    ) -> dict[str, list[Example]]:
        """``{"train": [...], "test": [...]}`` from a shuffled copy; sizes as counts or fractions."""
        if random_state is not None:
            random.seed(random_state)  # as DSPy does, so one seed gives DSPy's split
        shuffled = list(dataset)
        random.shuffle(shuffled)
        train_end = _split_size("train_size", train_size, len(shuffled))
        if test_size is None:
            test_end = len(shuffled) - train_end
        else:
            test_end = _split_size("test_size", test_size, len(shuffled))
            if train_end + test_end > len(shuffled):
                raise ConfigurationError(
                    f"train_test_split: train_size ({train_end}) + test_size ({test_end}) exceed the "
                    f"{len(shuffled)} examples"
                )
        return {"train": shuffled[:train_end], "test": shuffled[train_end : train_end + test_end]}


def _split_size(name: str, size: Any, total: int) -> int:
    if isinstance(size, float) and 0 < size < 1:
        return int(total * size)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    raise ConfigurationError(
        f"train_test_split: {name} must be a fraction between 0 and 1 or a number of examples, got {size!r}"
    )


def _examples(
    rows: Iterable[Mapping[str, Any]], fields: Sequence[str], input_keys: tuple[str, ...], source: Any
) -> list[Example]:
    examples = []
    for number, row in enumerate(rows, start=1):
        missing = [name for name in fields if name not in row]
        if missing:
            raise ConfigurationError(f"{source}: row {number} has no {', '.join(missing)}")
        examples.append(Example({name: row[name] for name in fields}).with_inputs(*input_keys))
    return examples


def _hub_examples(
    split: Iterable[Mapping[str, Any]], fields: tuple[str, ...] | None, input_keys: tuple[str, ...], name: str
) -> list[Example]:
    rows = list(split)
    columns = list(fields) if fields else list(rows[0]) if rows else []
    return _examples(rows, columns, input_keys, name)


def _json_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError:
        loaded = None
    if loaded is None:  # JSON Lines: one object per line
        try:
            loaded = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{path}: neither JSON nor JSON Lines ({exc})") from exc
    if isinstance(loaded, dict):
        loaded = [loaded]
    if not isinstance(loaded, list) or not all(isinstance(row, dict) for row in loaded):
        raise ConfigurationError(f"{path}: expected JSON objects (an array of them, or one per line)")
    return loaded


def _typed_columns(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Each CSV column as ints or floats when all its non-empty cells read as such; empty cells None."""
    converters = {name: _column_type([row.get(name) for row in rows]) for name in columns}
    return [
        {name: (None if row.get(name) in ("", None) else converters[name](row[name])) for name in columns}
        for row in rows
    ]


def _column_type(cells: list[str | None]) -> Any:
    values = [cell for cell in cells if cell not in ("", None)]
    for kind in (int, float):
        try:
            for value in values:
                kind(value)
        except ValueError:
            continue
        return kind if values else str
    return str
