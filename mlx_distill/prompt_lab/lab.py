"""The prompt lab of one run: samples, trials, the exemplar search and adopting a prompt.

Everything lives in the run folder's ``prompt-lab/``: the prompts tried (by hash), each trial's
rationale records, and ``trials.jsonl``. Samples come from the validation split only, never the
test split, and never hold a row used as an exemplar (exemplars come from the training split).
"""

from __future__ import annotations

import contextlib
import random
import re
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mlx_distill.config import RunConfig
from mlx_distill.data import TaskData
from mlx_distill.errors import DistillError
from mlx_distill.events import Log, OnEvent, ShouldStop, TeacherLoaded, ignore_event, never_stop
from mlx_distill.files import exclusive_lock, write_text_atomic
from mlx_distill.prompt_lab.exemplars import candidate_sets, with_rationales
from mlx_distill.prompt_lab.trial import Trial, TrialExample, run_trial
from mlx_distill.teacher import exemplar_prompt_text, exemplars_for, load_prompt, release_teacher

LAB_DIR = "prompt-lab"
EXEMPLARS_PER_SET = 4
MIN_SAMPLE = 4


def lab_dir_for(config: RunConfig, run_dir: str | Path | None = None) -> Path:
    run = Path(run_dir) if run_dir else Path(config.runs_dir) / config.name
    return run / LAB_DIR


def current_prompt_text(config: RunConfig, train: list) -> str:
    """The prompt the teacher stage would use now: the config's prompt file, else the built-in one,
    else a few-shot prompt from the training rows' reference rationales, else the generic one."""
    prompt_file = config.teacher.prompt_file or None
    return load_prompt(config.task.name, prompt_file, exemplars_for(config.task.name, prompt_file, train)).source


def draw_samples(task_data: TaskData, n: int, seed: int, count: int = 1) -> list[list]:
    """``count`` disjoint seeded samples of ``n`` validation questions (fewer when the split is small).

    Raises:
        DistillError: the validation split cannot give ``count`` samples of at least MIN_SAMPLE.
    """
    pool = [e for e in task_data.validation if e.label]
    if n < MIN_SAMPLE:
        raise DistillError(f"--n {n} is too small: a sample needs at least {MIN_SAMPLE} questions; "
                           f"give --n {MIN_SAMPLE} or more")
    size = min(n, len(pool) // count)
    if size < MIN_SAMPLE:
        raise DistillError(
            f"the validation split has {len(pool)} labelled questions, too few for {count} sample(s) of "
            f"{MIN_SAMPLE} or more; raise task.validation_fraction or add a validation file")
    order = pool[:]
    random.Random(seed).shuffle(order)
    return [order[i * size:(i + 1) * size] for i in range(count)]


def try_prompt(config: RunConfig, task_data: TaskData, *, n: int = 24, seed: int = 0, prompt_text: str | None = None,
               label: str = "", run_dir: str | Path | None = None, on_event: OnEvent = ignore_event,
               should_stop: ShouldStop = never_stop) -> tuple[Trial, list[TrialExample]]:
    """One trial of ``prompt_text`` (default: the config's prompt) on a seeded validation sample."""
    text = prompt_text if prompt_text is not None else current_prompt_text(config, task_data.train)
    (sample,) = draw_samples(task_data, n, seed)
    lab = lab_dir_for(config, run_dir)
    lab.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lab / ".lock", f"the prompt lab of {lab.parent}"):
        return run_trial(config, text, sample, lab, label=label or "current prompt",
                         train_size=len(task_data.train), on_event=on_event, should_stop=should_stop)


@contextlib.contextmanager
def _teacher_released_after(on_event: OnEvent) -> Iterator[None]:
    try:
        yield
    finally:
        release_teacher(on_event)


@dataclass(frozen=True)
class SearchResult:
    default_first: Trial  # the current prompt on the first sample
    candidates: list[Trial]  # each candidate set on the first sample
    best: Trial  # the chosen candidate on the first sample (the current prompt when none beats it)
    default_second: Trial  # the current prompt on the second, disjoint sample
    best_second: Trial  # the chosen candidate on the second sample: the figure that is reported
    bootstrapped: bool  # exemplars were the teacher's own gold-agreeing rationales
    exemplar_ids: list[list[str]]  # the training rows of each candidate, in candidate order

    @property
    def gain(self) -> float:
        """Accept rate of the chosen set minus the current prompt's, on the second sample."""
        return self.best_second.accept_rate - self.default_second.accept_rate

    def spread(self) -> tuple[float, float, float]:
        rates = [t.accept_rate for t in self.candidates]
        return min(rates), statistics.median(rates), max(rates)


def _rank(trial: Trial) -> tuple[int, int, int]:
    # More accepted first (what the student learns from); then fewer rationales that only restate
    # the answer; then fewer parse failures.
    return (trial.accepted, -trial.restating, -trial.parse_failures)


def choose_set(current: Trial, candidates: list[Trial]) -> int | None:
    """The index of the candidate that beats the current prompt most on the same sample, or None
    when none beats it (the current prompt then stays)."""
    if not candidates:
        return None
    best = max(range(len(candidates)), key=lambda i: _rank(candidates[i]))
    return best if _rank(candidates[best]) > _rank(current) else None


def search_exemplars(config: RunConfig, task_data: TaskData, *, k: int = 6, n: int = 24, seed: int = 0,
                     run_dir: str | Path | None = None, on_event: OnEvent = ignore_event,
                     should_stop: ShouldStop = never_stop) -> SearchResult:
    """Score ``k`` exemplar sets from the training rows on one sample; report the best one's gain
    over the current prompt on a second, disjoint sample (the choice never sees those numbers).

    Rows with a reference rationale are used as they are; without any, the teacher first answers
    training rows with the current prompt and its own gold-agreeing rationales become the pool.
    """
    if k < 1:
        raise DistillError(f"--search {k} must be at least 1")
    first, second = draw_samples(task_data, n, seed, count=2)
    lab = lab_dir_for(config, run_dir)
    lab.mkdir(parents=True, exist_ok=True)
    current = current_prompt_text(config, task_data.train)
    train_size = len(task_data.train)
    # One teacher load for every trial of the search (a 7B teacher takes a minute to load).
    with exclusive_lock(lab / ".lock", f"the prompt lab of {lab.parent}"), _teacher_released_after(on_event):
        loads: list[float] = [0.0]  # the teacher's load, paid by the first trial only

        def noting_the_load(event) -> None:
            if isinstance(event, TeacherLoaded):
                loads.append(event.seconds)
            on_event(event)

        def trial(text: str, sample: list, label: str) -> tuple[Trial, list[TrialExample]]:
            result, shown = run_trial(config, text, sample, lab, label=label, train_size=train_size,
                                      on_event=noting_the_load, should_stop=should_stop, keep_teacher=True,
                                      load_seconds=max(loads))
            on_event(Log(message=f"{label}: {result.accepted}/{result.questions} accepted"))
            return result, shown

        rows = with_rationales(task_data.train)
        bootstrapped = not rows
        if bootstrapped:
            rows = _bootstrap_rows(task_data, current, k, seed, trial)
        sets = candidate_sets(rows, k, EXEMPLARS_PER_SET, seed)
        default_first, _ = trial(current, first, "current prompt")
        texts = [exemplar_prompt_text(rows_) for rows_ in sets]
        candidates = [trial(text, first, f"candidate {i + 1}")[0] for i, text in enumerate(texts)]
        chosen = choose_set(default_first, candidates)
        default_second, _ = trial(current, second, "current prompt (second sample)")
        if chosen is None:
            best, best_second = default_first, default_second
        else:
            best = candidates[chosen]
            best_second, _ = trial(texts[chosen], second, f"candidate {chosen + 1} (second sample)")
    return SearchResult(default_first, candidates, best, default_second, best_second, bootstrapped,
                        [[r.id for r in rows_] for rows_ in sets])


def _bootstrap_rows(task_data: TaskData, current: str, k: int, seed: int, trial) -> list:
    """The teacher answers training rows with the current prompt; its gold-agreeing rationales
    that do not merely restate the answer become the exemplar pool."""
    pool = [e for e in task_data.train if e.label]
    random.Random(seed + 1).shuffle(pool)
    asked = pool[:max(8, 4 * k)]
    _, shown = trial(current, asked, "bootstrap (training rows)")
    rationales = {e.id: e.rationale for e in shown if e.accepted and e.rationale and not e.restates}
    rows = with_rationales(asked, rationales)
    if not rows:
        raise DistillError(
            "the training rows have no reference rationales and the teacher got none of "
            f"{len(asked)} training questions right with the current prompt; give a prompt file with a few "
            "worked examples (teacher.prompt_file) and search again")
    return rows


_PROMPT_FILE_LINE = re.compile(r"^[ \t]*prompt_file[ \t]*=.*$", re.MULTILINE)
_DOTTED_TEACHER_LINE = re.compile(r"^[ \t]*teacher[ \t]*\.[ \t]*[A-Za-z0-9_-]+[ \t]*=.*$", re.MULTILINE)
_DOTTED_PROMPT_FILE_LINE = re.compile(r"^[ \t]*teacher[ \t]*\.[ \t]*prompt_file[ \t]*=.*$", re.MULTILINE)
_SECTION = re.compile(r"^[ \t]*\[([^\]]+)\][ \t]*$", re.MULTILINE)


def _with_prompt_file(text: str, value: str) -> str:
    """``text`` with ``teacher.prompt_file`` set to ``value``, written where the file keeps its
    teacher settings: the ``[teacher]`` table, or dotted ``teacher.*`` keys before the first table."""
    line = tomli_w.dumps({"prompt_file": value}).strip()  # escapes quotes and backslashes
    sections = list(_SECTION.finditer(text))
    teacher = next((m for m in sections if m.group(1).strip() == "teacher"), None)
    if teacher is not None:
        end = next((m.start() for m in sections if m.start() > teacher.start()), len(text))
        body = text[teacher.end():end]
        if _PROMPT_FILE_LINE.search(body):
            body = _PROMPT_FILE_LINE.sub(lambda _: line, body, count=1)
        else:
            body = f"\n{line}" + body
        return text[:teacher.end()] + body + text[end:]
    root_end = sections[0].start() if sections else len(text)
    root = text[:root_end]
    dotted = list(_DOTTED_TEACHER_LINE.finditer(root))
    if dotted:
        if _DOTTED_PROMPT_FILE_LINE.search(root):
            root = _DOTTED_PROMPT_FILE_LINE.sub(lambda _: f"teacher.{line}", root, count=1)
        else:
            after = dotted[-1].end()
            root = root[:after] + f"\nteacher.{line}" + root[after:]
        return root + text[root_end:]
    return text.rstrip("\n") + f"\n\n[teacher]\n{line}\n"


def adopt_prompt(config_path: str | Path, prompt_path: str | Path) -> None:
    """Point the config's ``teacher.prompt_file`` at ``prompt_path``, keeping the file's comments.

    The edited text is parsed before it is written: a config whose layout this cannot edit safely
    is left as it was, with the line to add by hand.

    Raises:
        DistillError: the config file cannot be read, edited safely or written.
    """
    path = Path(config_path)
    value = Path(prompt_path).resolve().as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DistillError(f"cannot read config {path}: {error}") from None
    edited = _with_prompt_file(text, value)
    try:
        teacher = tomllib.loads(edited).get("teacher")
    except tomllib.TOMLDecodeError:
        teacher = None
    if not isinstance(teacher, dict) or teacher.get("prompt_file") != value:
        raise DistillError(f"cannot add the prompt to {path} safely (its teacher settings are laid out in a way "
                           f"this does not edit); add it by hand under [teacher]: "
                           f"{tomli_w.dumps({'prompt_file': value}).strip()}")
    try:
        write_text_atomic(path, edited)
    except OSError as error:
        raise DistillError(f"cannot write config {path} ({error.strerror or error}); make it writable and run "
                           "again with --adopt (the trial's results are kept)") from None
