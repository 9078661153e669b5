"""One prompt trial: the real teacher stage on a small sample of validation questions, scored.

A trial runs ``mlx_distill.teacher.generate_rationales`` exactly as the teacher stage does (same
rendering, batching, parsing, filter), into a rationale file of its own under the run folder's
``prompt-lab/``, then reads the records back and counts what matters for choosing a prompt:
accepted, parse failures, disagreements with the gold label, rationales that only restate the
answer, the answer distribution against the gold one (position bias shows there), tokens and time
per answer, and the full stage's time estimated from them.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlx_distill.config import RunConfig
from mlx_distill.errors import DistillError
from mlx_distill.events import OnEvent, ShouldStop, ignore_event, never_stop
from mlx_distill.data import Example
from mlx_distill.files import JsonlWriter, read_jsonl_records, write_jsonl_atomic, write_text_atomic
from mlx_distill.teacher import generate_rationales, parse_prompt_text

PROMPTS_DIR = "prompts"
RECORDS_DIR = "records"
SAMPLES_DIR = "samples"
TRIALS_FILE = "trials.jsonl"


def prompt_hash(text: str) -> str:
    """The name a prompt text is kept under in the lab (its content, not its file name)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def sample_key(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:8]


@dataclass(frozen=True)
class TrialExample:
    """One question of a trial, as the lab shows it."""

    id: str
    question: str
    gold: str
    answer: str
    rationale: str
    accepted: bool
    parse_ok: bool
    restates: bool
    agrees: bool | None = None  # with the gold label (None: not judged)
    rejected_because: str = ""


@dataclass(frozen=True)
class Trial:
    """What one prompt did on one sample."""

    prompt_hash: str
    prompt_path: str
    label: str  # "default", "candidate 3", a file name...
    sample: str  # sample_key of the question ids
    questions: int
    accepted: int
    parse_failures: int
    disagreements: int
    restating: int
    answers: dict[str, int]
    gold: dict[str, int]
    tokens_per_answer: float
    seconds_per_answer: float
    load_seconds: float
    estimated_stage_seconds: float
    stage_questions: int
    created: float = field(default_factory=time.time)

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.questions if self.questions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trial":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def save_prompt(lab_dir: Path, text: str) -> Path:
    """Keep a prompt text in the lab under its hash (checked first: a bad prompt is refused here)."""
    parse_prompt_text(text, "the prompt")
    path = lab_dir / PROMPTS_DIR / f"{prompt_hash(text)}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    return path


def stage_questions(config: RunConfig, train_size: int) -> int:
    """How many questions the full teacher stage will ask (``teacher.limit`` counts)."""
    return min(train_size, config.teacher.limit) if config.teacher.limit else train_size


def run_trial(config: RunConfig, prompt_text: str, examples: list, lab_dir: Path, *, label: str,
              train_size: int, on_event: OnEvent = ignore_event, should_stop: ShouldStop = never_stop,
              keep_teacher: bool = False, load_seconds: float = 0.0) -> tuple[Trial, list[TrialExample]]:
    """Run the teacher stage with ``prompt_text`` on ``examples`` and score it.

    Records are kept per (prompt, sample), so trying the same prompt on the same sample again
    costs nothing, and a stopped trial resumes. With ``keep_teacher`` the teacher stays loaded
    for the next trial (the caller releases it); ``load_seconds``, the load an earlier trial paid,
    then stands in the full stage's estimate (this trial found the teacher loaded).

    Raises:
        DistillError: a bad prompt text, or anything the teacher stage refuses.
    """
    teacher = config.teacher
    prompt_path = save_prompt(lab_dir, prompt_text)
    ids = [e.id for e in examples]
    key = sample_key(ids)
    records_path = lab_dir / RECORDS_DIR / f"{prompt_hash(prompt_text)}-{key}.jsonl"
    records_path.parent.mkdir(parents=True, exist_ok=True)
    sample_path = lab_dir / SAMPLES_DIR / f"{key}.jsonl"
    if not sample_path.exists():  # the questions and gold answers, for showing a trial later
        sample_path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(sample_path, [{"id": e.id, "input": e.input, "label": e.label} for e in examples])
    started = time.perf_counter()
    summary = generate_rationales(
        examples, config.task.name, teacher.model, records_path, batch_size=teacher.batch_size,
        max_tokens=teacher.max_tokens, filter=teacher.filter, prompt_file=prompt_path,
        rationalize=teacher.rationalize, samples=teacher.samples, quantize=teacher.quantize or None,
        on_event=on_event, should_stop=should_stop, keep_teacher=keep_teacher)
    if summary.stopped:
        raise TrialStopped(f"stopped; the finished answers are kept in {records_path}")
    wall = time.perf_counter() - started
    earlier = [t for t in read_trials(lab_dir) if t.prompt_hash == prompt_hash(prompt_text) and t.sample == key]
    trial, shown = score(records_path, examples, summary, wall, prompt_hash(prompt_text), prompt_path, label, key,
                         stage_questions(config, train_size), earlier[0] if earlier else None, teacher.batch_size)
    if load_seconds > trial.load_seconds:
        trial = replace(trial, load_seconds=load_seconds, estimated_stage_seconds=trial.estimated_stage_seconds
                        - trial.load_seconds + load_seconds)
    with JsonlWriter(lab_dir / TRIALS_FILE) as log:
        log.write(trial.to_dict())
    return trial, shown


class TrialStopped(DistillError):
    """The user stopped a trial; what it finished is kept for the next try."""


def score(records_path: Path, examples: list, summary: Any, wall_seconds: float, hash_: str, prompt_path: Path,
          label: str, key: str, stage_size: int, earlier: Trial | None = None,
          batch_size: int = 1) -> tuple[Trial, list[TrialExample]]:
    """Count a trial's records (only those of ``examples``); ``earlier`` is the last trial of the
    same prompt on the same sample (the one that generated), whose timing stands when every answer
    was already there."""
    by_id = {str(r.get("id")): r for r in read_jsonl_records(records_path)}
    shown: list[TrialExample] = []
    answers: Counter[str] = Counter()
    gold: Counter[str] = Counter()
    tokens = seconds = 0.0
    for example in examples:
        record = by_id.get(example.id)
        if record is None:
            continue
        shown.append(_example(example, record))
        answers[shown[-1].answer if shown[-1].parse_ok else "(no answer)"] += 1
        gold[example.label] += 1
        tokens += float(record.get("generated_tokens") or 0)
        seconds += float(record.get("seconds") or 0)
    done = len(shown)
    # Time per question in the batched stage: the stage's own generation time over the questions it
    # answered now (records reused from an earlier trial cost nothing and are not timed again).
    answered_now = max(0, summary.done - summary.skipped)
    if answered_now:
        load = _load_seconds(summary, wall_seconds)
        per_question = max(0.0, summary.seconds - load) / answered_now
    elif earlier is not None:
        load, per_question = earlier.load_seconds, earlier.seconds_per_answer
    else:
        # Records written outside a trial: each holds its batch's time, shared by the batch.
        load, per_question = 0.0, seconds / done / max(1, batch_size) if done else 0.0
    trial = Trial(
        prompt_hash=hash_, prompt_path=str(prompt_path), label=label, sample=key, questions=done,
        accepted=sum(e.accepted for e in shown),
        parse_failures=sum(not e.parse_ok for e in shown),
        disagreements=sum(e.parse_ok and e.agrees is False for e in shown),
        restating=sum(e.restates for e in shown),
        answers=dict(answers.most_common()), gold=dict(gold.most_common()),
        tokens_per_answer=tokens / done if done else 0.0,
        seconds_per_answer=per_question,
        load_seconds=load,
        estimated_stage_seconds=load + per_question * stage_size,
        stage_questions=stage_size,
    )
    return trial, shown


def _load_seconds(summary: Any, wall_seconds: float) -> float:
    """The stage's time outside generation (loading and releasing the teacher), from its own
    token counts and rates."""
    generating = 0.0
    if summary.generation_tps:
        generating += summary.generated_tokens / summary.generation_tps
    if summary.prompt_tps:
        generating += summary.prompt_tokens / summary.prompt_tps
    return max(0.0, min(summary.seconds, wall_seconds) - generating)


def read_trials(lab_dir: Path) -> list[Trial]:
    """Every trial run in this lab, oldest first."""
    return [Trial.from_dict(r) for r in read_jsonl_records(lab_dir / TRIALS_FILE)]


def trial_examples(lab_dir: Path, trial: Trial) -> list[TrialExample]:
    """A past trial's examples, each beside its gold answer (for the UI's side-by-side view)."""
    path = lab_dir / RECORDS_DIR / f"{trial.prompt_hash}-{trial.sample}.jsonl"
    by_id = {str(r.get("id")): r for r in read_jsonl_records(path)}
    shown = []
    for row in read_jsonl_records(lab_dir / SAMPLES_DIR / f"{trial.sample}.jsonl"):
        record = by_id.get(str(row.get("id")))
        if record is None:
            continue
        example = Example(str(row["id"]), str(row.get("input", "")), str(row.get("label", "")))
        shown.append(_example(example, record))
    return shown


def _example(example, record: dict[str, Any]) -> TrialExample:
    return TrialExample(example.id, example.input, example.label, str(record.get("answer") or ""),
                        str(record.get("rationale") or ""), bool(record.get("accepted")),
                        bool(record.get("parse_ok")), bool(record.get("restates_answer")), record.get("agrees"),
                        str(record.get("rejected_because") or ""))
