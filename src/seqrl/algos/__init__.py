"""One file per algorithm; ``ALGORITHMS`` maps the CLI name to its class."""

from __future__ import annotations

from seqrl.algos.bc import BehaviourCloning
from seqrl.algos.cmt import CMTRepresentation
from seqrl.algos.dt import DecisionTransformerAlgorithm
from seqrl.algos.dt_meta import PromptDT
from seqrl.errors import UnknownNameError

ALGORITHMS = {
    "dt": DecisionTransformerAlgorithm,
    "bc": BehaviourCloning,
    "cmt": CMTRepresentation,
    "prompt-dt": PromptDT,
}


def get_algorithm(name: str):
    if name not in ALGORITHMS:
        raise UnknownNameError(f"unknown algorithm '{name}' (known: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]
