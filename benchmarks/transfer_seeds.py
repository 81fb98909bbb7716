"""Pool several ``motionprop transfer`` results (one per pre-training seed, say) into one claim about a recipe.

Each pre-trained encoder in the given results is compared per clip with the random init of its own
results (J&F minus random init), as ``results.md`` does for one file; the last row is the mean of those
per-clip differences over all the encoders, with the number of clips it is better on and the one-sided
paired sign-flip p over clips. The results must have the same clips and the same scoring settings
(size, layer, precision, the task's parameters, random seeds); a file that differs is named.

    python benchmarks/transfer_seeds.py --task probe tr_s0_l4 tr_s1_l4 [...]
    python benchmarks/transfer_seeds.py --task propagation tr_s0_l3/results.json tr_s1_l3/results.json

Prints a markdown table (the rows of docs/transfer_measurements.md's seed tables).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from motionprop.errors import MotionpropError
from motionprop.evaluation.benchmark import TASKS
from motionprop.evaluation.seeds import pool_results, pooled_markdown


def read_results(path: str) -> tuple[str, dict]:
    """A transfer output folder or its results.json -> (the folder's name, the results dict)."""
    file = Path(path) / "results.json" if Path(path).is_dir() else Path(path)
    label = file.parent.name if file.name == "results.json" else file.stem
    try:
        result = json.loads(file.read_text())
    except OSError as exc:
        raise MotionpropError(f"{file}: cannot read it ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise MotionpropError(f"{file}: not a results.json of motionprop transfer ({exc.msg})") from exc
    if not isinstance(result, dict) or not {"encoders", "settings"} <= result.keys():
        raise MotionpropError(f"{file}: not a results.json of motionprop transfer (no encoders or settings)")
    return label, result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="transfer output folders (or their results.json)")
    parser.add_argument("--task", choices=TASKS, required=True, help="the task whose J&F is pooled")
    args = parser.parse_args(argv)
    try:
        pooled = pool_results([read_results(path) for path in args.results], args.task)
    except MotionpropError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(pooled_markdown(pooled))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
