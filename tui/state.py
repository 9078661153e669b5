"""What the dashboard shows, folded from the event stream (plain Python, no Textual).

``DashboardState.apply(event)`` takes events in order (live from ``events.jsonl`` or replayed from a
finished run) and keeps the figures the dashboard draws; the widgets only render it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mlx_distill import events as ev
from mlx_distill.platform import format_bytes
from mlx_distill.progress import format_duration

PENDING, RUNNING, DONE, SKIPPED, FAILED, STOPPED = "pending", "running", "done", "skipped", "failed", "stopped"

STAGE_ICONS = {PENDING: "○", RUNNING: "◐", DONE: "●", SKIPPED: "↷", FAILED: "✗", STOPPED: "■"}


# Control characters from a model (a random demo teacher emits them) must not reach the terminal.
_UNPRINTABLE = {code: None for code in range(32) if chr(code) not in "\n\t"} | {127: None}


def printable(text: str) -> str:
    """``text`` without control characters (newlines and tabs kept)."""
    return text.translate(_UNPRINTABLE)


def format_seconds(seconds: float | None) -> str:
    """``1h02m``, ``3m05s`` or ``42s``; ``—`` for unknown."""
    return format_duration(seconds, unknown="—")


def candidate_label(name: str) -> str:
    """``step-by-step-a0.5`` → ``step-by-step α0.5``; other names as they are."""
    prefix = "step-by-step-a"
    return f"step-by-step α{name[len(prefix):]}" if name.startswith(prefix) else name


@dataclass
class CandidateProgress:
    """One candidate's training and scoring, as the plots and the Training panel show it."""

    name: str
    train: ev.TrainStep | None = None
    steps: list[int] = field(default_factory=list)
    label_losses: list[float] = field(default_factory=list)
    rationale_steps: list[int] = field(default_factory=list)
    rationale_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_accuracies: list[float] = field(default_factory=list)
    best_validation: ev.EvalResult | None = None
    test: ev.EvalResult | None = None

    @property
    def label(self) -> str:
        return candidate_label(self.name)

    def add_step(self, event: ev.TrainStep) -> None:
        self.train = event
        self.steps.append(event.step)
        self.label_losses.append(event.label_loss)
        if event.rationale_loss is not None:
            self.rationale_steps.append(event.step)
            self.rationale_losses.append(event.rationale_loss)

    def add_result(self, event: ev.EvalResult) -> None:
        if event.split == "test":
            self.test = event
            return
        self.eval_steps.append(event.step)
        self.eval_accuracies.append(event.accuracy)
        if self.best_validation is None or event.best or event.accuracy > self.best_validation.accuracy:
            self.best_validation = event


def _shown(name: str) -> property:
    """A read-only attribute of the candidate the dashboard shows (``DashboardState.shown``)."""
    return property(lambda self: getattr(self.shown, name))


@dataclass
class DashboardState:
    """Everything the run dashboard needs, updated one event at a time."""

    stages: dict[str, str] = field(default_factory=lambda: {name: PENDING for name in ev.STAGES})
    teacher: ev.TeacherProgress | None = None
    # The latest TeacherProgress of each rank when the teacher stage runs on several (multi-Mac).
    teacher_ranks: dict[int, ev.TeacherProgress] = field(default_factory=dict)
    teacher_model: str = ""
    # Each trained candidate's progress by name (train.select); "" holds a run's lone student.
    candidates: dict[str, CandidateProgress] = field(default_factory=dict)
    current: str = ""  # the candidate whose events came last
    chosen: str = ""  # the exported candidate, once chosen on validation
    payoff: dict | None = None  # step-by-step against finetune, from the run's Finished summary
    memory: ev.MemoryReport | None = None
    finished: ev.Finished | None = None
    failed: ev.Failed | None = None
    paused: ev.Paused | None = None  # waiting between batches on a low battery
    log: list[str] = field(default_factory=list)
    events: int = 0
    # False when no pipeline process holds the run: one killed mid-stage never sent its end.
    pipeline_alive: bool = True

    @property
    def running(self) -> bool:
        """True between the first event and the run's Finished/Failed, while its process lives."""
        return self.events > 0 and self.finished is None and self.failed is None and self.pipeline_alive

    @property
    def shown_stages(self) -> dict[str, str]:
        """Stage states to draw: a stage left running by a process that is gone shows as stopped."""
        if self.pipeline_alive:
            return self.stages
        return {name: STOPPED if state == RUNNING else state for name, state in self.stages.items()}

    @property
    def status(self) -> str:
        if self.failed is not None:
            return f"failed in {self.failed.stage}"
        if self.finished is not None:
            return "stopped — finished work is kept; resume with r" if self.finished.stopped else "finished"
        if self.events == 0:
            return "not started"
        if not self.pipeline_alive:
            return "incomplete — no pipeline is running; resume with r"
        if self.paused is not None:
            return f"paused on battery ({self.paused.battery_percent}%): plug in, or press r to go on"
        running = [name for name, state in self.stages.items() if state == RUNNING]
        return f"running: {running[0]}" if running else "running"

    def apply(self, event: ev.Event) -> list[str]:
        """Fold one event in; returns the log lines it adds."""
        self.events += 1
        lines = self._apply(event)
        self.log.extend(lines)
        return lines

    def _apply(self, event: ev.Event) -> list[str]:
        if isinstance(event, ev.Paused):
            self.paused = event
        elif isinstance(event, (ev.Resumed, ev.StageStarted, ev.Finished, ev.Failed)):
            self.paused = None
        if isinstance(event, ev.StageStarted):
            if event.stage in ev.STAGES and self.finished is not None:
                self.finished = None  # a resumed run continues after an earlier stop
            self.failed = None if event.stage in ev.STAGES else self.failed
            self.stages[event.stage] = RUNNING
            return [f"▶ {event.stage}" + (f": {event.detail}" if event.detail else "")]
        if isinstance(event, ev.StageFinished):
            self.stages[event.stage] = SKIPPED if event.skipped else DONE
            how = "already done, skipped" if event.skipped else format_seconds(event.seconds)
            return [f"✓ {event.stage} ({how})" + (f" {event.detail}" if event.detail else "")]
        if isinstance(event, ev.Log):
            prefix = "" if event.level == "info" else f"{event.level}: "
            return [prefix + event.message]
        if isinstance(event, ev.MemoryReport):
            self.memory = event
            return []
        if isinstance(event, ev.TeacherLoaded):
            self.teacher_model = event.model
            return [f"teacher {event.model} loaded ({event.dtype}, {format_bytes(event.weight_bytes)}, "
                    f"{event.seconds:.1f} s)"]
        if isinstance(event, ev.TeacherProgress):
            self.teacher_ranks[event.rank] = event
            self.teacher = event if len(self.teacher_ranks) == 1 else _all_ranks(event, self.teacher_ranks)
            return []
        if isinstance(event, ev.TeacherReleased):
            return [f"teacher released (peak {format_bytes(event.peak_bytes)}, "
                    f"{format_bytes(event.active_bytes_after)} still in use)"]
        if isinstance(event, ev.TrainStep):
            self._candidate(event.candidate).add_step(event)
            return []
        if isinstance(event, ev.EvalResult):
            self._candidate(event.candidate).add_result(event)
            best = " (best)" if event.best else ""
            who = f"{candidate_label(event.candidate)}: " if event.candidate else ""
            return [f"{who}{event.split} accuracy at step {event.step}: {event.accuracy:.1%} "
                    f"({event.correct}/{event.total}){best}"]
        if isinstance(event, ev.CandidateChosen):
            self.chosen = event.candidate
            return [f"✓ exporting {event.label}: {event.reason}"]
        if isinstance(event, ev.CheckpointSaved):
            return [f"checkpoint saved at step {event.step}" + (" (best)" if event.best else "")]
        if isinstance(event, ev.Finished):
            if event.stage in ev.STAGES:
                self.stages[event.stage] = STOPPED if event.stopped else DONE
                return [f"■ {event.stage} stopped" if event.stopped else f"✓ {event.stage} finished"]
            self.finished = event
            self.payoff = event.summary.get("payoff") or self.payoff
            self.chosen = (event.summary.get("selection") or {}).get("chosen", self.chosen)
            if event.stopped:
                for name, state in self.stages.items():
                    if state == RUNNING:
                        self.stages[name] = STOPPED
                hint = f" — {event.resume_hint}" if event.resume_hint else ""
                return [f"■ run stopped; finished work is kept{hint}"]
            return ["✓ run finished"]
        if isinstance(event, ev.Failed):
            self.failed = event
            if event.stage in self.stages:
                self.stages[event.stage] = FAILED
            else:
                for name, state in self.stages.items():
                    if state == RUNNING:
                        self.stages[name] = FAILED
            return [f"error in {event.stage}: {event.error}"]
        return []

    # ---- text the dashboard shows ----

    def memory_text(self) -> str:
        if self.memory is None:
            return "memory: —"
        m = self.memory
        return (f"memory: {format_bytes(m.active)} in use · peak {format_bytes(m.peak)} "
                f"· {format_bytes(m.total)} on this machine")

    def teacher_text(self, show_eta: bool = True) -> str:
        t = self.teacher
        if t is None:
            return "waiting for the teacher stage" if self.stages.get("teacher") != SKIPPED else "rationales already generated"
        rate = t.accepted / t.done if t.done else 0.0
        first = [f"{t.done}/{t.total} questions", f"{t.generation_tps:.1f} tok/s"]
        if show_eta and self.shown_stages.get("teacher") == RUNNING:
            first.append(f"ETA {format_seconds(t.eta_seconds)}")
        second = [f"accepted {t.accepted} ({rate:.0%})"]
        if t.parse_failures:
            second.append(f"{t.parse_failures} unparsed")
        text = " · ".join(first) + "\n" + " · ".join(second)
        if len(self.teacher_ranks) > 1:
            text += "\nranks: " + " · ".join(f"{r}: {p.done}/{p.total}" for r, p in sorted(self.teacher_ranks.items()))
        return text

    def latest_text(self) -> tuple[str, str, bool] | None:
        """(question, rationale + answer, accepted) of the teacher's latest finished example."""
        t = self.teacher
        if t is None or not (t.latest_input or t.latest_rationale):
            return None
        answer = f"\n→ {t.latest_answer}" if t.latest_answer else ""
        return t.latest_input, t.latest_rationale + answer, t.latest_accepted

    # ---- the candidate shown: the one training now, or the exported one at the end ----

    def _candidate(self, name: str) -> CandidateProgress:
        if name not in self.candidates:
            self.candidates[name] = CandidateProgress(name)
        self.current = name
        return self.candidates[name]

    @property
    def shown(self) -> CandidateProgress:
        name = self.chosen if self.chosen in self.candidates and not self.running else self.current
        return self.candidates.get(name) or CandidateProgress("")

    # The shown candidate's figures, under the names a lone run's state always had.
    train = _shown("train")
    steps = _shown("steps")
    label_losses = _shown("label_losses")
    rationale_steps = _shown("rationale_steps")
    rationale_losses = _shown("rationale_losses")
    eval_steps = _shown("eval_steps")
    eval_accuracies = _shown("eval_accuracies")
    best_validation = _shown("best_validation")
    test = _shown("test")

    def train_text(self, show_eta: bool = True) -> str:
        s = self.train
        if s is None:
            return "waiting for training"
        if len(self.candidates) > 1:
            # The panel's rows and the plots carry each candidate's figures; this line says which
            # one trains now, and goes once training is over (80x24 has no row to spare).
            return f"{self.shown.label} · step {s.step}/{s.total_steps}" if self.running else ""
        first = [f"step {s.step}/{s.total_steps}", f"loss {s.loss:.3f}", f"{s.tokens_per_second:.0f} tok/s"]
        if show_eta and self.shown_stages.get("train") == RUNNING:
            first.append(f"ETA {format_seconds(s.eta_seconds)}")
        second = [f"label {s.label_loss:.3f}"]
        if s.rationale_loss is not None:
            second.append(f"rationale {s.rationale_loss:.3f}")
        return " · ".join(first) + "\n" + " · ".join(second)

    def accuracy_text(self) -> str:
        if len(self.candidates) > 1:
            return self.candidates_text()
        parts = []
        if self.eval_accuracies:
            parts.append(f"validation {self.eval_accuracies[-1]:.1%}")
        if self.best_validation is not None:
            parts.append(f"best {self.best_validation.accuracy:.1%} @{self.best_validation.step}")
        if self.test is not None:
            parts.append(f"test {self.test.accuracy:.1%} ({self.test.correct}/{self.test.total})")
        return " · ".join(parts) if parts else "no evaluation yet"

    # What the candidate rows' two columns are (the Training panel's subtitle).
    CANDIDATE_COLUMNS = "best validation · test"

    def candidates_text(self) -> str:
        """A row per candidate (best validation, test; ✓ the exported one, ▸ the one training),
        then step-by-step against finetune with its 95% interval once the run has measured it."""
        width = max(len(c.label) for c in self.candidates.values())
        rows = []
        for name, c in self.candidates.items():
            mark = "✓" if name == self.chosen else ("▸" if name == self.current and self.running else " ")
            best = f"{c.best_validation.accuracy:.0%}" if c.best_validation else "—"
            test = f"{c.test.accuracy:.0%}" if c.test else "—"
            rows.append(f"{mark} {c.label:<{width}} {best:>4} {test:>5}")
        if self.payoff:
            p = self.payoff
            rows.append(f"vs finetune {p['difference'] * 100:+.1f} pts [{p['low'] * 100:+.1f}, {p['high'] * 100:+.1f}]")
        return "\n".join(rows)


def _all_ranks(latest: ev.TeacherProgress, ranks: dict[int, ev.TeacherProgress]) -> ev.TeacherProgress:
    """One progress for the whole sharded teacher stage: counts and speeds summed over ranks."""
    parts = ranks.values()
    return dataclasses.replace(
        latest, done=sum(p.done for p in parts), total=sum(p.total for p in parts),
        accepted=sum(p.accepted for p in parts), parse_failures=sum(p.parse_failures for p in parts),
        generated_tokens=sum(p.generated_tokens for p in parts), generation_tps=sum(p.generation_tps for p in parts),
        eta_seconds=max((p.eta_seconds or 0.0) for p in parts))
