"""DSPy's module paths, answered by the dspex modules that hold the same names.

DSPy programs import from deep paths (``from dspy.predict.predict import Predict``,
``from dspy.teleprompt import BootstrapFewShot``, ``from dspy.adapters.chat_adapter import ChatAdapter``).
With ``dspy`` changed to ``dspex`` those imports must keep working, while dspex keeps its own layout
(``dspex.modules``, ``dspex.optimizers``...). This table is the one place that maps the two: importing
a path on the left gives the module on the right, the very same module object (no copy, no wrapper),
so a class has one identity whichever path it was imported by.

Paths that exist in dspex under the same name (``dspex.evaluate.evaluate``,
``dspex.primitives.example``, ``dspex.utils.dummies``...) are real modules and are not listed here.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Final

__all__ = ["DSPY_PATHS", "install"]

DSPY_PATHS: Final[dict[str, str]] = {
    "dspex.predict": "dspex.modules",
    "dspex.predict.predict": "dspex.modules.predict",
    "dspex.predict.chain_of_thought": "dspex.modules.chain_of_thought",
    "dspex.predict.react": "dspex.modules.react",
    "dspex.predict.react_v2": "dspex.modules.react_v2",
    "dspex.predict.program_of_thought": "dspex.modules.program_of_thought",
    "dspex.predict.code_act": "dspex.modules.code_act",
    "dspex.predict.multi_chain_comparison": "dspex.modules.multi_chain_comparison",
    "dspex.predict.best_of_n": "dspex.modules.best_of_n",
    "dspex.predict.refine": "dspex.modules.refine",
    "dspex.predict.rlm": "dspex.modules.rlm",
    "dspex.predict.parallel": "dspex.modules.parallel",
    "dspex.predict.aggregation": "dspex.modules.aggregation",
    "dspex.predict.knn": "dspex.optimizers.knn",
    "dspex.teleprompt": "dspex.optimizers",
    "dspex.teleprompt.teleprompt": "dspex.optimizers._base",
    "dspex.teleprompt.bootstrap": "dspex.optimizers.bootstrap",
    "dspex.teleprompt.vanilla": "dspex.optimizers.labeled",
    "dspex.teleprompt.random_search": "dspex.optimizers.random_search",
    "dspex.teleprompt.knn_fewshot": "dspex.optimizers.knn",
    "dspex.teleprompt.ensemble": "dspex.optimizers.ensemble",
    "dspex.teleprompt.copro_optimizer": "dspex.optimizers.copro",
    "dspex.teleprompt.signature_opt": "dspex.optimizers.copro",
    "dspex.teleprompt.mipro_optimizer_v2": "dspex.optimizers.mipro",
    "dspex.teleprompt.simba": "dspex.optimizers.simba",
    "dspex.teleprompt.utils": "dspex.optimizers.utils",
    "dspex.teleprompt.bootstrap_trace": "dspex.optimizers.bootstrap_trace",
    "dspex.teleprompt.bootstrap_finetune": "dspex.optimizers.finetune",
    "dspex.teleprompt.bettertogether": "dspex.optimizers.bettertogether",
    "dspex.teleprompt.grpo": "dspex.optimizers.grpo",
    "dspex.teleprompt.infer_rules": "dspex.optimizers.infer_rules",
    "dspex.teleprompt.teleprompt_optuna": "dspex.optimizers.optuna_demos",
    "dspex.teleprompt.gepa": "dspex.optimizers.gepa",
    "dspex.teleprompt.gepa.gepa": "dspex.optimizers.gepa.gepa",
    "dspex.teleprompt.gepa.gepa_utils": "dspex.optimizers.gepa.adapter",
    "dspex.teleprompt.gepa.gepa_flex_utils": "dspex.optimizers.gepa.adapter",
    "dspex.teleprompt.gepa.instruction_proposal": "dspex.optimizers.gepa.proposer",
    "dspex.clients.embedding": "dspex.lm.embedder",
    "dspex.adapters.chat_adapter": "dspex.adapters.chat",
    "dspex.signatures.signature": "dspex.signatures",
    "dspex.signatures.field": "dspex.signatures",
    "dspex.primitives.base_module": "dspex.primitives.module",
    "dspex.utils.exceptions": "dspex.errors",
    "dspex.dsp": "dspex.utils",
    "dspex.dsp.utils": "dspex.utils",
    "dspex.dsp.utils.utils": "dspex.utils.dotdict",
    "dspex.dsp.colbertv2": "dspex.retrievers.colbertv2",
    "dspex.utils.callback_context": "dspex.utils.callback",
    "dspex.utils.usage_tracker": "dspex.lm.usage",
    "dspex.utils.inspect_history": "dspex.lm.history",
    "dspex.clients": "dspex.lm",
    "dspex.clients.lm": "dspex.lm.client",
    "dspex.clients.base_lm": "dspex.lm.base",
    "dspex.clients.cache": "dspex.lm.cache",
    "dspex.clients.disk_serialization": "dspex.lm.cache_disk",
    "dspex.clients.provider": "dspex.lm.finetune.provider",
    "dspex.clients.utils_finetune": "dspex.lm.finetune.data",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, alias: str, target: str) -> None:
        self._alias, self._target = alias, target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        # The import system stores what this returns under the alias name: the real module itself.
        module = importlib.import_module(self._target)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # Nothing to run; the import system has just overwritten __spec__ with the alias's: undo it.
        module.__spec__ = self._real_spec
        _bind_loaded_children(self._alias)


def _bind_loaded_children(alias: str) -> None:
    """Alias the children of ``alias`` whose modules are loaded already, as a DSPy package's
    ``__init__`` imports its submodules (``import dspy.clients`` then ``dspy.clients.lm.LM``)."""
    prefix = alias + "."
    for name, real in DSPY_PATHS.items():
        if name.startswith(prefix) and "." not in name[len(prefix) :] and real in sys.modules:
            importlib.import_module(name)


class _DspyPathFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        real = DSPY_PATHS.get(fullname)
        if real is None or real == fullname:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(fullname, real))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): the aliases win over a missing module."""
    if not any(isinstance(finder, _DspyPathFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DspyPathFinder())
