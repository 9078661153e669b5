"""The candidates a run trains on the same rows, the one it exports, and what the teacher bought.

A run trains its method (step-by-step at a few α values when it is chosen on validation) and its
baselines (``finetune`` by default) with the same student, rows, steps and seed. ``choose`` keeps
the best on the validation split, never the test split; ``payoff`` compares step-by-step with
finetune on the same test questions, with a paired-bootstrap interval and a plain sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mlx_distill.metrics import paired_bootstrap


@dataclass(frozen=True)
class Candidate:
    """One method at one α, trained into its own folder."""

    name: str  # folder-safe: "step-by-step-a0.5", "finetune"
    method: str
    alpha: float
    configured: bool = False  # the run's own method at its own α (trains into train/)
    baseline: bool = False  # a train.baselines entry

    @property
    def label(self) -> str:
        """How people read it: ``step-by-step (α 0.5)``, ``finetune``."""
        return f"{self.method} (α {self.alpha:g})" if self.method == "step-by-step" else self.method


def candidate_name(method: str, alpha: float) -> str:
    return f"{method}-a{alpha:g}" if method == "step-by-step" else method


def plan_candidates(method: str, alpha: float, alphas: Sequence[float], baselines: Sequence[str]) -> list[Candidate]:
    """The configured method at each of ``alphas`` (its own ``alpha`` among them), then each baseline
    that is not already one of them."""
    wanted = sorted(set(alphas) | {alpha}) if method == "step-by-step" else [alpha]
    out = [Candidate(candidate_name(method, a), method, a, configured=a == alpha) for a in wanted]
    names = {c.name for c in out}
    for extra in baselines:
        name = candidate_name(extra, alpha)
        if name not in names:
            out.append(Candidate(name, extra, alpha, baseline=True))
            names.add(name)
    return out


def choose(candidates: Sequence[Candidate], validation: Mapping[str, float | None], *, by_validation: bool) -> tuple[Candidate, str]:
    """The candidate to export and why, from validation accuracies by candidate name.

    With ``by_validation`` the best validation accuracy wins; a tie goes to the configured method,
    then to the α nearest the configured one (the order of ``candidates``). Otherwise, and when no
    candidate was scored on validation, the configured candidate is exported.
    """
    configured = next(c for c in candidates if c.configured)
    if not by_validation:
        return configured, "train.select = \"none\": the configured method is exported"
    scored = [(validation[c.name], c) for c in candidates if validation.get(c.name) is not None]
    if not scored:
        return configured, "no validation split to choose on: the configured method is exported"
    ranked = sorted(scored, key=lambda vc: (-vc[0], not vc[1].configured and vc[1].method != configured.method,
                                            round(abs(vc[1].alpha - configured.alpha), 9)))
    best_accuracy, best = ranked[0]
    others = [f"{c.label} {v * 100:.1f}%" for v, c in scored if c is not best]
    return best, (f"best validation accuracy: {best_accuracy * 100:.1f}%"
                  + (f" (against {', '.join(others)})" if others else ""))


def verdict(difference: float, low: float, high: float) -> str:
    """One plain sentence on step-by-step against finetune (fractions in, points out)."""
    interval = f"95% interval {low * 100:+.1f} to {high * 100:+.1f} points"
    if low > 0:
        return f"The teacher's rationales helped by {difference * 100:.1f} points ({interval})."
    if high < 0:
        return f"The teacher's rationales cost {-difference * 100:.1f} points ({interval})."
    return f"The teacher's rationales made no measurable difference ({difference * 100:+.1f} points, {interval})."


def payoff(step_by_step: Sequence[Mapping[str, Any]], finetune: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Step-by-step against finetune on the same test questions (prediction records with ``id`` and
    ``correct``): both accuracies, the difference, its paired-bootstrap 95% interval, the verdict."""
    theirs = {r["id"]: bool(r["correct"]) for r in finetune}
    ids = [r["id"] for r in step_by_step if r["id"] in theirs]
    ours = {r["id"]: bool(r["correct"]) for r in step_by_step}
    a, b = [ours[i] for i in ids], [theirs[i] for i in ids]
    difference, low, high = paired_bootstrap(a, b)
    return {"questions": len(ids), "step_by_step_accuracy": sum(a) / len(ids), "finetune_accuracy": sum(b) / len(ids),
            "difference": difference, "low": low, "high": high, "verdict": verdict(difference, low, high)}
