"""A recipe, not a seed: several ``motionprop transfer`` results (e.g. one per pre-training seed) pooled per clip.

Each pre-trained encoder is compared with the random init that its own results hold (same clips, same
settings, paired per clip); the pooled row averages those per-clip differences over the encoders, and its
sign-flip p says whether the recipe beats random init over the clips, which one seed's luck cannot say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from .report import clip_differences, random_pairs, sign_flip_p

SETTINGS_THAT_MATTER = ("short_side", "feature_stride", "features", "precision", "random_seeds")
"""Settings that must agree between pooled results (the task's own settings and the clips are checked too)."""


@dataclass
class Row:
    """One encoder (or the pooled mean): its J&F, per-clip J&F minus random init, and their summary."""

    name: str
    jf: float
    diffs: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.diffs))

    @property
    def wins(self) -> int:
        return sum(d > 0 for d in self.diffs)

    @property
    def p(self) -> float:
        return sign_flip_p(self.diffs)


@dataclass
class Pooled:
    """The encoders' rows, their pooled mean and random init's J&F, over ``clips``."""

    task: str
    clips: list[str]
    rows: list[Row]
    pooled: Row
    random_jf: float
    """Random init's mean J&F (over the architectures compared with, if several)."""
    random_spread: float
    """The largest difference between the files' random-init J&F on one clip (0 when they agree)."""


def pool_results(results: Sequence[tuple[str, dict]], task: str) -> Pooled:
    """(label, results.json dict) pairs -> every pre-trained encoder's per-clip J&F minus its file's random
    init, and their mean per clip. Raises :class:`InputError` naming the file whose clips or settings differ
    from the first's, or that holds no random init for ``task``."""
    if not results:
        raise InputError("no transfer results to pool")
    first_label, first = results[0]
    clips = list(first["settings"]["clips"])
    rows, randoms = [], {}
    for label, result in results:
        _check_comparable(label, result, first_label, first, task)
        _check_one_random_per_arch(label, result, task)
        for entry, ref in random_pairs(result, task):
            if ref is None:
                raise InputError(f"{label}: no random init of {entry['name']}'s architecture ({entry['arch']}) "
                                 f"scored on {task}; run motionprop transfer with its random baseline (the default)")
            randoms.setdefault(entry["arch"], {})[label] = [ref["tasks"][task]["clips"][c]["JF"] for c in clips]
            rows.append(Row(f"{label}: {entry['name']}", entry["tasks"][task]["mean"]["JF"],
                            clip_differences(entry, ref, task, clips)))
    if not rows:
        raise InputError(f"no pre-trained encoder scored on {task} in {', '.join(label for label, _ in results)}")
    per_arch = [np.asarray(list(by_file.values())) for by_file in randoms.values()]
    pooled = Row(f"mean of {len(rows)}", float(np.mean([r.jf for r in rows])),
                 np.mean([r.diffs for r in rows], axis=0).tolist())
    return Pooled(task, clips, rows, pooled, float(np.mean([a.mean() for a in per_arch])),
                  max(float((a.max(axis=0) - a.min(axis=0)).max()) for a in per_arch))


def _check_comparable(label: str, result: dict, first_label: str, first: dict, task: str) -> None:
    """Pooling is per clip: the clips, the task's settings and the feature settings must be the same."""
    settings, ref = result["settings"], first["settings"]
    if task not in settings.get("tasks", ()):
        raise InputError(f"{label}: no {task} results (tasks: {', '.join(settings.get('tasks', ())) or 'none'})")
    if list(settings["clips"]) != list(ref["clips"]):
        raise InputError(f"{label}: clips {', '.join(settings['clips'])} differ from those of {first_label} "
                         f"({', '.join(ref['clips'])})")
    for key in SETTINGS_THAT_MATTER + (task,):
        if _scoring(settings.get(key)) != _scoring(ref.get(key)):
            raise InputError(f"{label}: setting {key} = {settings.get(key)!r} differs from {first_label}'s "
                             f"{ref.get(key)!r}; pooled results must be scored alike")


def _scoring(value: object) -> object:
    """A setting as it bears on the scores: the propagation's ``query_chunk`` only splits the work."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "query_chunk"}
    return value


def _check_one_random_per_arch(label: str, result: dict, task: str) -> None:
    """Two random inits of one architecture leave the pairing ambiguous: refuse rather than take one."""
    archs = [e["arch"] for e in result["encoders"] if e["kind"] == "random init" and task in e["tasks"]]
    for arch in set(archs):
        if archs.count(arch) > 1:
            raise InputError(f"{label}: two random inits of {arch} scored on {task}; pool files with one")


def pooled_markdown(pooled: Pooled) -> str:
    """The table: J&F, per-clip differences, mean, clips better and one-sided p, per encoder and pooled."""
    lines = [f"| {pooled.task}: minus random init ({', '.join(pooled.clips)}) | J&F | per clip | mean | "
             "better on | p |", "|---|---:|---|---:|---:|---:|"]
    for row in pooled.rows + ([pooled.pooled] if len(pooled.rows) > 1 else []):
        per_clip = ", ".join(f"{100 * d:+.1f}" for d in row.diffs)
        lines.append(f"| {row.name} | {100 * row.jf:.1f} | {per_clip} | {100 * row.mean:+.1f} | "
                     f"{row.wins} of {len(row.diffs)} | {row.p:.3f} |")
    lines.append(f"| random init | {100 * pooled.random_jf:.1f} | | | | |")
    if pooled.random_spread > 1e-6:
        lines += ["", f"Random init differs between the files by up to {100 * pooled.random_spread:.2f} J&F on a "
                      "clip; each encoder is compared with its own file's."]
    return "\n".join(lines)
