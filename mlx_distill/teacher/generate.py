"""The teacher stage: a local LLM writes a rationale and an answer for every training example.

``generate_rationales`` loads the teacher (``mlx_distill.teacher.model``), renders few-shot
prompts (``mlx_distill.teacher.prompt``), runs them through mlx-lm's continuous-batching
``BatchGenerator``, parses each output (``mlx_distill.teacher.parse``), applies the filter policy and
appends one JSONL record per example to the output file.

Throughput: prompts are sorted by length (longest first, so a memory problem shows at once), the
few-shot prefix that every prompt shares is run through the model once and its KV cache handed to
every sequence as its prompt cache, and a sequence stops at the end-of-turn token or at the first
text that starts an invented next exemplar.

Resume: the file is flushed and fsynced after every ``batch_size`` finished examples; a rerun
skips the ids already in it. A file written by another teacher or another prompt is refused
(``DistillError`` naming it) rather than mixed: choose a new ``--out``. One writer at a time: the
stage holds an OS lock beside the file (``mlx_distill.files.exclusive_lock``) from before the
teacher is loaded until the last record is written; a second writer fails at once, naming the first.

Threads: MLX streams are thread-local and MLX 0.32 may abort at exit when a thread that made one
ended without ``mx.clear_streams()``. So the stage does its MLX work (load, generate, release) in a
short-lived thread of its own (`mlx_distill.mlx_thread.run_in_mlx_thread`); any thread may call it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import mlx.core as mx

from mlx_distill.errors import DistillError
from mlx_distill.events import Log, OnEvent, ShouldStop, TeacherProgress, ignore_event, never_stop
from mlx_distill.files import JsonlWriter, cut_torn_tail, exclusive_lock, lock_path_for, read_jsonl_lines
from mlx_distill.machine import prefill_step_size as device_prefill_step_size
from mlx_distill.methods import FILTERS, TEACHER_BATCH_SIZE
from mlx_distill.metrics import is_correct, normalize_label
from mlx_distill.mlx_thread import run_in_mlx_thread
from mlx_distill.teacher.model import load_teacher, memory_report, release_teacher, teacher_identity
from mlx_distill.teacher.parse import ParsedOutput, parse_output, restates_answer
from mlx_distill.teacher.prompt import (BUILTIN_TASKS, STOP_STRINGS, PromptTemplate, choices_in_input, load_prompt,
                                        pick_exemplars, render_prompt, stop_token_ids)

SAMPLE_TEMPERATURE = 0.7
SAMPLE_TOP_P = 0.95
# Shared prefixes shorter than this are not worth a separate prefill.
MIN_PREFIX_TOKENS = 8
_MAX_STOP_CHARS = max(len(s) for s in STOP_STRINGS)
# A question longer than this many teacher tokens is cut (as the student's training cuts its inputs).
MAX_QUESTION_TOKENS = 1024
# Characters kept per allowed token before tokenizing, so a huge question is never tokenized whole
# (no tokenizer makes tokens this long from ordinary text).
_CHARS_PER_TOKEN_BOUND = 16
# The question limit never goes below this, even when the few-shot prompt fills the context.
_MIN_QUESTION_TOKENS = 64


@dataclass(frozen=True)
class RationaleSummary:
    """What the teacher stage did (counts cover every record of these examples in the file)."""

    path: str
    total: int  # examples asked for (after limit)
    done: int  # examples with a record now
    skipped: int  # already in the file before this run
    accepted: int
    parse_failures: int
    generated_tokens: int  # this run
    prompt_tokens: int  # this run
    seconds: float
    generation_tps: float
    prompt_tps: float
    peak_memory_bytes: int
    stopped: bool = False
    teacher: str = ""
    prompt_hash: str = ""
    restating: int = 0  # accepted rationales that only restate the answer (parse.restates_answer)
    exemplar_ids: tuple[str, ...] = ()  # training rows shown as the prompt's worked exemplars
    thinking: int = 0  # answers whose <think>...</think> block was stripped before parsing

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.done if self.done else 0.0


@dataclass
class _Job:
    example: Any
    tokens: list[int]
    samples: list[tuple[str, int, float]] = field(default_factory=list)  # (text, generated, seconds)


def _read_finished(path: Path, teacher: str, prompt_hash: str) -> dict[str, dict]:
    """Records already in ``path``; cuts a torn last line; refuses a file from another teacher/prompt."""
    if not path.exists():
        return {}
    cut_torn_tail(path)
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DistillError(f"{path}:{line} is not UTF-8 text, so it is not a rationale file mlx-distill wrote; "
                           "move it away or choose another --out") from None
    finished: dict[str, dict] = {}
    for number, line in read_jsonl_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise DistillError(f"{path}:{number} is not a JSON line; move the file away or choose "
                               "another --out") from None
        if record.get("teacher") != teacher or record.get("prompt_hash") != prompt_hash:
            raise DistillError(
                f"{path} holds rationales from another teacher or prompt ({record.get('teacher')}, "
                f"prompt {record.get('prompt_hash')}); choose a new --out to keep both")
        finished[str(record["id"])] = record
    return finished


def exemplars_for(task: str, prompt_file: str | Path | None, pool: list) -> list:
    """The user's rows shown as worked exemplars: only for a task with no built-in prompt and no
    prompt file, from the rows of ``pool`` that carry a reference rationale."""
    if task in BUILTIN_TASKS or prompt_file is not None:
        return []
    return pick_exemplars(pool)


def _prompt_and_hash(task: str, prompt_file: str | Path | None, rationalize: bool,
                     samples: int, exemplars: list = ()) -> tuple[PromptTemplate, str]:
    template = load_prompt(task, prompt_file, exemplars)
    return template, template.hash(rationalize=rationalize, extra=f"samples={samples}")


def finished_records(out_path: str | Path, task: str, teacher: str, *, prompt_file: str | Path | None = None,
                     rationalize: bool = False, samples: int = 1, quantize: int | None = None,
                     exemplar_pool: list | None = None) -> dict[str, dict]:
    """The records already in a rationale file, by id (a torn last line is cut off).

    For a caller that holds the file's lock (``lock_path_for(out_path)``); loads no model.

    Raises:
        DistillError: the file holds a bad line or records of another teacher or prompt.
    """
    exemplars = exemplars_for(task, prompt_file, exemplar_pool or [])
    _, prompt_hash = _prompt_and_hash(task, prompt_file, rationalize, samples, exemplars)
    return _read_finished(Path(out_path).expanduser(), teacher_identity(teacher, quantize), prompt_hash)


def _longest_common_prefix(sequences: Iterable[list[int]]) -> int:
    sequences = list(sequences)
    if not sequences:
        return 0
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for sequence in sequences[1:]:
        n = 0
        while n < length and sequence[n] == first[n]:
            n += 1
        length = n
    return length


def _prefill_prefix(model, tokens: list[int], stream, step: int = 2048) -> list:
    """The KV cache of the shared prompt prefix, computed once."""
    from mlx_lm.models.cache import make_prompt_cache  # mlx_lm imports transformers (seconds): lazy

    cache = make_prompt_cache(model)
    with mx.stream(stream):
        for begin in range(0, len(tokens), step):
            model(mx.array(tokens[begin:begin + step])[None], cache=cache)
            mx.eval([c.state for c in cache])
    return cache


def _judge(task: str, example, parsed: ParsedOutput, policy: str, restating: bool,
           reject_restating: bool) -> tuple[bool | None, str]:
    """(agrees with gold or None without a gold label, why it is rejected: "" when accepted)."""
    agrees = None
    if example.label:
        agrees = parsed.parse_ok and is_correct(task, parsed.answer, example.label)
    if policy in ("gold", "teacher") and not parsed.parse_ok:
        if parsed.answer:  # written, but not a choice, a number or a label the task can take
            return agrees, f"the answer {parsed.answer[:40]!r} is not one the task can take"
        return agrees, "no answer found (no 'So the answer is ...')"
    if policy == "gold" and not agrees:
        return agrees, "answer disagrees with the gold label"
    if not parsed.rationale.strip():
        return agrees, "empty rationale"
    if reject_restating and restating:
        return agrees, "rationale only restates the answer"
    return agrees, ""


def _choices(example) -> tuple[str, ...]:
    return example.choices or choices_in_input(example.input)


def _vote(task: str, example, samples: list[tuple[str, int, float]]) -> tuple[str, ParsedOutput]:
    """Self-consistency: the first sample whose answer is the most common parsed answer."""
    parsed = [parse_output(task, text, _choices(example)) for text, _, _ in samples]
    votes = Counter(normalize_label(task, p.answer) for p in parsed if p.parse_ok)
    if votes:
        winner = votes.most_common(1)[0][0]
        for (text, _, _), p in zip(samples, parsed):
            if p.parse_ok and normalize_label(task, p.answer) == winner:
                return text, p
    return samples[0][0], parsed[0]


def generate_rationales(examples: list, task: str, teacher: str, out_path: str | Path, *,
                        batch_size: int = TEACHER_BATCH_SIZE, max_tokens: int = 256, filter: str = "gold",
                        limit: int | None = None, prompt_file: str | Path | None = None,
                        rationalize: bool = False, samples: int = 1, quantize: int | None = None,
                        precision: str = "auto", prefix_cache: bool = True,
                        max_question_tokens: int = MAX_QUESTION_TOKENS, reject_restating: bool = False,
                        exemplar_pool: list | None = None, prefill_step_size: int | None = None,
                        on_event: OnEvent = ignore_event, should_stop: ShouldStop = never_stop,
                        keep_teacher: bool = False) -> RationaleSummary:
    """Ask the teacher for a rationale and answer per example; append records to ``out_path``.

    Args:
        examples: ``mlx_distill.data.Example`` items (id, input, label, choices).
        task: ``svamp``/``cqa``/``esnli``/``anli`` (built-in prompts and parsers) or any other name
            (generic prompt and parser; give ``prompt_file`` for your own task).
        teacher: Local folder, hub id or catalog name of a causal LM.
        out_path: The JSONL rationale file (created, or resumed).
        batch_size: Sequences generated together. Default: ``TEACHER_BATCH_SIZE`` (16).
        max_tokens: Generated tokens per answer at most. Default: ``256``.
        filter: ``gold`` (accept when the answer agrees with the gold label), ``all``, or
            ``teacher`` (accept any parsed answer; for unlabeled data). Default: ``gold``.
        limit: Only the first ``limit`` examples.
        prompt_file: A prompt file (format in ``mlx_distill.teacher.prompt``) instead of the built-in one.
        rationalize: Put the gold answer in the prompt as a hint; the teacher explains it.
        samples: Answers per example; more than 1 samples at temperature 0.7 and keeps the majority
            answer (self-consistency). Default: ``1`` (greedy).
        quantize: 4 or 8: quantize an unquantized teacher on load.
        precision: ``auto``/``float32``/``native`` (see ``load_teacher``).
        prefix_cache: Reuse the shared few-shot prefix's KV cache. Default: ``True``.
        max_question_tokens: A question longer than this many teacher tokens (or than the model's
            context leaves after the few-shot prompt and ``max_tokens``) is cut to fit; one Log
            event says how many were. Default: ``MAX_QUESTION_TOKENS`` (1024).
        reject_restating: Also reject a rationale that only restates the answer ("A cod is a
            fish."); counted in ``RationaleSummary.restating`` either way. Default: ``False``.
        exemplar_pool: For a task with no built-in prompt and no ``prompt_file``: the rows whose
            reference rationales become the prompt's worked exemplars (held out from generation).
            Default: ``examples`` (before ``limit``); pass the training rows when ``examples`` is
            another split or a shard.
        prefill_step_size: Prompt tokens per sequence in one prefill step (mlx-lm's), so no GPU
            command runs for seconds. Default: from the device (``mlx_distill.machine``).
        on_event: Receives TeacherLoaded, MemoryReport, TeacherProgress, TeacherReleased, Log.
        should_stop: Polled every generation step; finished records are kept.
        keep_teacher: Reuse the teacher loaded by an earlier call (same model and precision) and
            leave it loaded (the prompt lab's trials); the caller calls ``release_teacher``.

    Threads: any thread may call it; the MLX work runs in a short-lived thread of the stage's own
    (``on_event`` and ``should_stop`` are called from that thread while the caller waits).

    Returns:
        A ``RationaleSummary``.

    Raises:
        DistillError: Bad option, prompt file, teacher, memory, an output file from another
            teacher or prompt, or another process writing ``out_path`` (its pid is named).
    """
    if filter not in FILTERS:
        raise DistillError(f"filter {filter!r} is not one of {', '.join(FILTERS)}")
    if batch_size < 1 or max_tokens < 1 or samples < 1 or max_question_tokens < 1:
        raise DistillError("batch size, max tokens, samples and max question tokens must each be at least 1")
    exemplars = exemplars_for(task, prompt_file, examples if exemplar_pool is None else exemplar_pool)
    held_out = {e.id for e in exemplars}
    examples = [e for e in examples if e.id not in held_out]
    if limit is not None:
        examples = examples[:max(limit, 0)]
    template, prompt_hash = _prompt_and_hash(task, prompt_file, rationalize, samples, exemplars)
    if exemplars:
        on_event(Log(f"prompt: {len(exemplars)} training rows with reference rationales are the worked exemplars "
                     f"(not asked): {', '.join(sorted(held_out))}"))
    out = Path(out_path).expanduser()
    identity = teacher_identity(teacher, quantize)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Taken before the teacher loads, so a second writer of the same file fails at once.
    with exclusive_lock(lock_path_for(out), f"rationale file {out}"):
        finished = _read_finished(out, identity, prompt_hash)
        wanted = {e.id for e in examples}
        pending = [e for e in examples if e.id not in finished]
        skipped = len(wanted & set(finished))
        if skipped:
            on_event(Log(f"resuming {out}: {skipped} of {len(examples)} examples already done"))
        accepted = sum(1 for i, r in finished.items() if i in wanted and r.get("accepted"))
        failures = sum(1 for i, r in finished.items() if i in wanted and not r.get("parse_ok"))
        restating = sum(1 for i, r in finished.items() if i in wanted and r.get("accepted") and r.get("restates_answer"))
        thinking = sum(1 for i, r in finished.items() if i in wanted and r.get("thinking"))
        state = _Progress(len(examples), skipped, accepted, failures, restating=restating, thinking=thinking)
        if not pending:
            on_event(TeacherProgress(done=skipped, total=len(examples), accepted=accepted,
                                     parse_failures=failures, generated_tokens=0, generation_tps=0.0,
                                     prompt_tps=0.0, eta_seconds=0.0))
            return RationaleSummary(str(out), len(examples), skipped, skipped, accepted, failures, 0, 0, 0.0,
                                    0.0, 0.0, 0, teacher=identity, prompt_hash=prompt_hash, restating=restating,
                                    exemplar_ids=tuple(sorted(held_out)), thinking=thinking)

        pending = _cut_characters(pending, max_question_tokens * _CHARS_PER_TOKEN_BOUND)

        def run(stop: ShouldStop) -> RationaleSummary:
            start = time.perf_counter()
            mx.reset_peak_memory()
            loaded = load_teacher(teacher, quantize=quantize, precision=precision, batch_size=batch_size,
                                  prompt_tokens=_rough_prompt_tokens(template, pending), max_tokens=max_tokens,
                                  on_event=on_event, reuse=keep_teacher)
            try:
                limit = _question_token_limit(loaded, template, task, rationalize, max_tokens, max_question_tokens)
                fitted = _cut_questions(loaded.tokenizer, pending, limit, on_event)
                jobs = [_Job(e, render_prompt(loaded.tokenizer, template, task, e.input, e.label, rationalize))
                        for e in fitted]
                with JsonlWriter(out, durable=True) as writer:
                    stopped = _generate(loaded, jobs, task, (filter, reject_restating), samples, batch_size,
                                        max_tokens, prefix_cache, prompt_hash, writer, state, on_event, stop,
                                        prefill_step_size or device_prefill_step_size(batch_size))
                on_event(memory_report())
            finally:
                peak = int(mx.get_peak_memory())
                if not keep_teacher:
                    release_teacher(on_event)
            return RationaleSummary(
                str(out), len(examples), state.done, skipped, state.accepted, state.failures,
                state.generated_tokens, state.prompt_tokens, time.perf_counter() - start, state.generation_tps,
                state.prompt_tps, peak, stopped=stopped, teacher=identity, prompt_hash=prompt_hash,
                restating=state.restating, exemplar_ids=tuple(sorted(held_out)), thinking=state.thinking)

        return run_in_mlx_thread(run, should_stop, name="mlx-distill-teacher")


def _cut_characters(examples: list, max_chars: int) -> list:
    """Examples whose question is cut to ``max_chars`` characters: a cheap first cut, before any
    tokenizer sees the text (a 5 MB question would take minutes and gigabytes to tokenize)."""
    return [dataclasses.replace(e, input=e.input[:max_chars]) if len(e.input) > max_chars else e
            for e in examples]


def _question_token_limit(loaded, template: PromptTemplate, task: str, rationalize: bool, max_tokens: int,
                          max_question_tokens: int) -> int:
    """Tokens a question may take: ``max_question_tokens``, or less when the model's context minus
    the few-shot prompt and ``max_tokens`` leaves less."""
    config = loaded.config.get("text_config") or loaded.config
    context = config.get("max_position_embeddings")
    if not isinstance(context, int) or context <= 0:
        return max_question_tokens
    prompt = len(render_prompt(loaded.tokenizer, template, task, "", "", rationalize))
    return max(min(max_question_tokens, context - prompt - max_tokens), _MIN_QUESTION_TOKENS)


def _cut_questions(tokenizer, examples: list, limit: int, on_event: OnEvent) -> list:
    """Examples with each question cut to ``limit`` teacher tokens; one Log event says how many."""
    fitted, cut = [], 0
    for example in examples:
        # limit + 1 tokens at most tell whether it is longer (and keep transformers from warning).
        ids = tokenizer.encode(example.input, add_special_tokens=False, truncation=True, max_length=limit + 1)
        if len(ids) > limit:
            example = dataclasses.replace(example, input=tokenizer.decode(ids[:limit]))
            cut += 1
        fitted.append(example)
    if cut:
        on_event(Log(f"{cut} of {len(examples)} questions were longer than {limit} teacher tokens and were "
                     f"cut to {limit}", level="warning"))
    return fitted


def _rough_prompt_tokens(template, examples) -> int:
    """Upper-bound prompt length in tokens for the memory estimate (~3 characters a token)."""
    fixed = len(template.source)
    longest = max((len(e.input) + len(e.label) for e in examples), default=0)
    return (fixed + longest) // 3 + 16


@dataclass
class _Progress:
    total: int
    done: int
    accepted: int
    failures: int
    generated_tokens: int = 0
    prompt_tokens: int = 0
    generation_tps: float = 0.0
    prompt_tps: float = 0.0
    restating: int = 0
    thinking: int = 0
    latest: tuple = (None, None, False)  # (example, parsed output, accepted) last written


def _generate(loaded, jobs: list[_Job], task: str, policy: tuple[str, bool], samples: int, batch_size: int,
              max_tokens: int, use_prefix: bool, prompt_hash: str, writer: JsonlWriter, state: _Progress,
              on_event: OnEvent, should_stop: ShouldStop, prefill_step_size: int) -> bool:
    """Run every job through one BatchGenerator; write records as examples finish. True if stopped."""
    # mlx_lm imports transformers (seconds): only once a teacher runs.
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.generate_utils import BatchStats
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = loaded.model, loaded.tokenizer
    stream = mx.new_thread_local_stream(mx.default_device())
    jobs.sort(key=lambda j: len(j.tokens), reverse=True)
    prefix_len = 0
    if use_prefix:
        prefix_len = min(_longest_common_prefix(j.tokens for j in jobs), min(len(j.tokens) for j in jobs) - 1)
    cache = (_prefill_prefix(model, jobs[0].tokens[:prefix_len], stream, prefill_step_size)
             if prefix_len >= MIN_PREFIX_TOKENS else None)
    if cache is None:
        prefix_len = 0
    sampler = make_sampler(temp=SAMPLE_TEMPERATURE, top_p=SAMPLE_TOP_P) if samples > 1 else None
    generator = BatchGenerator(model, max_tokens=max_tokens, stop_tokens=[[t] for t in stop_token_ids(tokenizer)],
                               sampler=sampler, completion_batch_size=batch_size, prefill_batch_size=batch_size,
                               prefill_step_size=prefill_step_size, stream=stream)
    inputs = [job.tokens[prefix_len:] for job in jobs for _ in range(samples)]
    uids = generator.insert(inputs, caches=[cache] * len(inputs) if cache is not None else None)
    owner = {uid: jobs[i // samples] for i, uid in enumerate(uids)}
    detokenizers = {uid: tokenizer.detokenizer for uid in uids}
    counts = dict.fromkeys(uids, 0)
    started: dict[int, float] = {}
    unfinished = set(uids)
    written: list[str] = []
    checked: dict[int, int] = {}
    stats = BatchStats()
    stage_start = time.perf_counter()
    stopped = False
    reported = -1

    def finish(uid: int) -> None:
        detokenizer = detokenizers.pop(uid)
        detokenizer.finalize()
        job = owner.pop(uid)
        unfinished.discard(uid)
        job.samples.append((detokenizer.text, counts[uid], time.perf_counter() - started.get(uid, stage_start)))
        if len(job.samples) == samples:
            written.append(_record(job, task, policy, loaded.name, prompt_hash, state))

    try:
        while unfinished:
            if should_stop():
                stopped = True
                break
            with generator.stats() as step:
                prompt_responses, generation_responses = generator.next()
            stats += step
            now = time.perf_counter()
            for response in prompt_responses:
                started.setdefault(response.uid, now)
            for response in generation_responses:
                uid = response.uid
                if response.finish_reason != "stop":
                    detokenizers[uid].add_token(response.token)
                    counts[uid] += 1
                if response.finish_reason is not None:
                    finish(uid)
                    continue
                text = detokenizers[uid].text
                # Only the new text (plus a stop string's length before it) can complete a stop string.
                tail = text[max(0, checked.get(uid, 0) - _MAX_STOP_CHARS):]
                checked[uid] = len(text)
                if any(s in tail for s in STOP_STRINGS):
                    generator.remove([uid])
                    finish(uid)
            if len(written) >= batch_size or (written and not unfinished):
                _flush(writer, written)
                _report(state, stats, len(jobs) * samples, len(unfinished), prefix_len, now - stage_start, on_event)
                reported = state.done
    finally:
        if written:
            _flush(writer, written)
        generator.close()
    if reported != state.done or stopped:
        _report(state, stats, len(jobs) * samples, len(unfinished), prefix_len, time.perf_counter() - stage_start,
                on_event)
    return stopped


def _record(job: _Job, task: str, policy: tuple[str, bool], teacher: str, prompt_hash: str, state: _Progress) -> str:
    example = job.example
    if len(job.samples) == 1:
        raw, parsed = job.samples[0][0], parse_output(task, job.samples[0][0], _choices(example))
    else:
        raw, parsed = _vote(task, example, job.samples)
    filter_name, reject_restating = policy
    restating = bool(parsed.rationale.strip()) and restates_answer(parsed.rationale, example.input, parsed.answer)
    agrees, rejected = _judge(task, example, parsed, filter_name, restating, reject_restating)
    accepted = not rejected
    generated = sum(s[1] for s in job.samples)
    state.done += 1
    state.accepted += accepted
    state.failures += not parsed.parse_ok
    state.restating += accepted and restating
    state.thinking += parsed.thinking
    state.generated_tokens += generated
    state.latest = (example, parsed, accepted)
    record = {"id": example.id, "teacher": teacher, "prompt_hash": prompt_hash, "raw": raw,
              "rationale": parsed.rationale, "answer": parsed.answer, "agrees": agrees, "accepted": accepted,
              "rejected_because": rejected, "restates_answer": restating, "parse_ok": parsed.parse_ok, "thinking": parsed.thinking, "prompt_tokens": len(job.tokens), "generated_tokens": generated,
              "seconds": round(max(s[2] for s in job.samples), 3)}
    return json.dumps(record, ensure_ascii=False)


def _flush(writer: JsonlWriter, lines: list[str]) -> None:
    writer.write_lines(lines)  # flushed and fsynced (durable): a crash loses at most the next batch
    lines.clear()


def _report(state: _Progress, stats, sequences: int, unfinished: int, prefix_len: int, elapsed: float,
            on_event: OnEvent) -> None:
    state.prompt_tokens = stats.prompt_tokens + prefix_len
    state.generation_tps = stats.generation_tokens / elapsed if elapsed > 0 else 0.0
    state.prompt_tps = stats.prompt_tps if stats.prompt_time > 0 else 0.0
    finished = sequences - unfinished
    eta = elapsed / finished * unfinished if finished else None
    example, parsed, accepted = state.latest
    on_event(TeacherProgress(
        done=state.done, total=state.total, accepted=state.accepted, parse_failures=state.failures,
        generated_tokens=state.generated_tokens, generation_tps=state.generation_tps, prompt_tps=state.prompt_tps,
        eta_seconds=eta if unfinished else 0.0,
        latest_id=example.id if example else "", latest_input=example.input[:500] if example else "",
        latest_rationale=parsed.rationale[:1000] if parsed else "", latest_answer=parsed.answer if parsed else "",
        latest_accepted=bool(accepted)))
