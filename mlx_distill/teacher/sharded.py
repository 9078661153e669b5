"""The teacher stage over several processes: each rank writes rationales for its own shard.

Rank ``r`` of ``n`` runs ``teacher.generate_rationales`` on every ``n``-th pending example into its
own part file beside the run's rationale file (``rationales.rank{r}-of-{n}.jsonl``, on its own
disk), so it resumes by id exactly as a single machine does, and a rank that dies loses only the
batch it had not flushed. When every rank is done (or stopped), the parts travel to rank 0 over
``mx.distributed`` (no shared disk needed) and rank 0 merges them into the rationale file: records
already in it first, then the new ones in example order, each id once. The part files are then
removed, since the merged file holds them all. With one process this is ``generate_rationales``.

Rank 0 holds the rationale file's lock (``mlx_distill.files.exclusive_lock``) from its first look
at the file until the merge is written; each rank's ``generate_rationales`` holds its part's lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

from mlx_distill import distributed
from mlx_distill.errors import DistillError
from mlx_distill.events import Log, OnEvent, ShouldStop, ignore_event, never_stop
from mlx_distill.files import complete_lines, exclusive_lock, lock_path_for, read_jsonl_records, write_jsonl_atomic
from mlx_distill.teacher.generate import RationaleSummary, exemplars_for, finished_records, generate_rationales

# The options of generate_rationales that decide whose records a rationale file may hold.
_IDENTITY_OPTIONS = ("prompt_file", "rationalize", "samples", "quantize", "exemplar_pool")


def _read_records(path: Path) -> dict[str, dict]:
    """Records of a rationale JSONL file by id (file order, later duplicates win; a torn line skipped)."""
    return {str(r["id"]): r for r in read_jsonl_records(path) if "id" in r}


def _complete_lines(path: Path) -> bytes:
    try:
        return complete_lines(path.read_bytes())
    except FileNotFoundError:
        return b""


def merge_parts(out_path: str | Path, parts: list[bytes], example_ids: list[str]) -> dict[str, dict]:
    """Merge part files' contents into ``out_path`` (atomically); return the merged records.

    Records already in ``out_path`` keep their place; new ones follow in ``example_ids`` order,
    then any others; an id already present is not added again.
    """
    out = Path(out_path)
    merged = _read_records(out)
    new: dict[str, dict] = {}
    for blob in parts:
        for line in blob.decode("utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            rid = str(record["id"])
            if rid not in merged:
                new.setdefault(rid, record)
    position = {rid: i for i, rid in enumerate(example_ids)}
    for rid in sorted(new, key=lambda i: position.get(i, len(position))):
        merged[rid] = new[rid]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out, list(merged.values()))
    return merged


def generate_rationales_sharded(examples: list, task: str, teacher: str, out_path: str | Path, *,
                                limit: int | None = None, on_event: OnEvent = ignore_event,
                                should_stop: ShouldStop = never_stop, **options: Any) -> RationaleSummary:
    """``teacher.generate_rationales`` with the examples split over every rank of the group.

    Call it on every rank with the same arguments. Takes the keyword options of
    ``generate_rationales`` (batch_size, max_tokens, filter, prompt_file, rationalize, samples,
    quantize, ...).

    Returns:
        The same ``RationaleSummary`` on every rank, for the merged file: counts over all ranks,
        throughputs summed, seconds and peak memory the largest of any rank, ``stopped`` if any
        rank stopped.

    Raises:
        DistillError: as ``generate_rationales`` (bad options, a file from another teacher/prompt,
            another process writing the file), on every rank.
    """
    rank, size = distributed.rank(), distributed.size()
    if size == 1:
        return generate_rationales(examples, task, teacher, out_path, limit=limit, on_event=on_event,
                                   should_stop=should_stop, **options)
    # Every rank's prompt shows the same exemplars, picked from all the rows (not from its shard).
    options.setdefault("exemplar_pool", examples)
    held_out = {e.id for e in exemplars_for(task, options.get("prompt_file"), options["exemplar_pool"])}
    examples = [e for e in examples if e.id not in held_out]
    if limit is not None:
        examples = examples[:max(limit, 0)]
    out = Path(out_path).expanduser()
    with contextlib.ExitStack() as held:
        done_ids: list[str] | None = None
        error = None
        if rank == 0:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                held.enter_context(exclusive_lock(lock_path_for(out), f"rationale file {out}"))
                # Checks that the file is this teacher's and prompt's (and cuts a torn line); no model.
                identity = {k: options[k] for k in _IDENTITY_OPTIONS if k in options}
                done_ids = list(finished_records(out, task, teacher, **identity))
            except DistillError as refused:
                error = str(refused)
        # Every rank learns rank 0's answer, so a refusal stops them all instead of leaving them waiting.
        answer = distributed.broadcast_json({"done": done_ids, "error": error})
        if answer["error"] is not None:
            raise DistillError(answer["error"])
        return _generate_shards(examples, task, teacher, out, set(answer["done"]), rank, size, on_event,
                                should_stop, options)


def _generate_shards(examples: list, task: str, teacher: str, out: Path, done: set[str], rank: int, size: int,
                     on_event: OnEvent, should_stop: ShouldStop, options: dict[str, Any]) -> RationaleSummary:
    pending = [e for e in examples if e.id not in done]
    mine = distributed.shard(pending, rank, size)
    part = distributed.part_path(out, rank, size)
    if rank == 0:
        on_event(Log(message=f"teacher sharded over {size} ranks: {len(pending)} of {len(examples)} examples "
                             f"to write, about {len(mine)} each (parts: {part.name} ...)"))
    summary = generate_rationales(mine, task, teacher, part, on_event=distributed.with_rank(on_event, rank),
                                  should_stop=should_stop, **options)
    # Every rank reaches this point, finished or stopped; the parts travel to rank 0.
    parts = distributed.gather_bytes(_complete_lines(part))
    per_rank = distributed.gather_json(dataclasses.asdict(summary))
    totals = None
    if rank == 0:
        merged = merge_parts(out, parts, [e.id for e in examples])
        wanted = [merged[e.id] for e in examples if e.id in merged]
        totals = {"done": len(wanted), "accepted": sum(bool(r.get("accepted")) for r in wanted),
                  "parse_failures": sum(not r.get("parse_ok") for r in wanted),
                  "restating": sum(bool(r.get("accepted") and r.get("restates_answer")) for r in wanted)}
    totals = distributed.broadcast_json(totals)  # also the barrier: the merge is on disk now
    part.unlink(missing_ok=True)
    combined = dataclasses.replace(
        summary,
        path=str(out),
        total=len(examples),
        done=totals["done"],
        skipped=len(done & {e.id for e in examples}) + sum(s["skipped"] for s in per_rank),
        accepted=totals["accepted"],
        parse_failures=totals["parse_failures"],
        restating=totals["restating"],
        generated_tokens=sum(s["generated_tokens"] for s in per_rank),
        prompt_tokens=sum(s["prompt_tokens"] for s in per_rank),
        seconds=max(s["seconds"] for s in per_rank),
        generation_tps=sum(s["generation_tps"] for s in per_rank),
        prompt_tps=sum(s["prompt_tps"] for s in per_rank),
        peak_memory_bytes=max(s["peak_memory_bytes"] for s in per_rank),
        stopped=any(s["stopped"] for s in per_rank),
        teacher=next((s["teacher"] for s in per_rank if s["teacher"]), summary.teacher),
        prompt_hash=next((s["prompt_hash"] for s in per_rank if s["prompt_hash"]), summary.prompt_hash),
    )
    if rank == 0:
        on_event(Log(message=f"merged {size} parts into {out.name}: {combined.done} of {combined.total} examples, "
                             f"{combined.accepted} accepted"))
    return combined
