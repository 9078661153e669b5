"""The teacher stage over several processes: each rank writes rationales for its own shard.

Rank ``r`` of ``n`` runs ``teacher.generate_rationales`` on every ``n``-th pending example into its
own part file beside the run's rationale file (``rationales.rank{r}-of-{n}.jsonl``, on its own
disk), so it resumes by id exactly as a single machine does, and a rank that dies loses only the
batch it had not flushed. When every rank is done (or stopped), the parts travel to rank 0 over
``mx.distributed`` (no shared disk needed) and rank 0 merges them into the rationale file: records
already in it first, then the new ones in example order, each id once. The part files are then
removed, since the merged file holds them all. With one process this is ``generate_rationales``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from mlx_distill import distributed
from mlx_distill.events import Log, OnEvent, ShouldStop, ignore_event, never_stop


def _read_records(path: Path) -> dict[str, dict]:
    """Records of a rationale JSONL file by id (file order, later duplicates win; a torn line skipped)."""
    records: dict[str, dict] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the torn last line of a killed writer
        if isinstance(record, dict) and "id" in record:
            records[str(record["id"])] = record
    return records


def _complete_lines(path: Path) -> bytes:
    if not path.exists():
        return b""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def _write_merged(out: Path, merged: dict[str, dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.merge")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged.values()))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, out)


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
    _write_merged(out, merged)
    return merged


def generate_rationales_sharded(examples: list, task: str, teacher: str, out_path: str | Path, *,
                                limit: int | None = None, on_event: OnEvent = ignore_event,
                                should_stop: ShouldStop = never_stop, **options: Any):
    """``teacher.generate_rationales`` with the examples split over every rank of the group.

    Call it on every rank with the same arguments. Takes the keyword options of
    ``generate_rationales`` (batch_size, max_tokens, filter, prompt_file, rationalize, samples,
    quantize, ...).

    Returns:
        The same ``RationaleSummary`` on every rank, for the merged file: counts over all ranks,
        throughputs summed, seconds and peak memory the largest of any rank, ``stopped`` if any
        rank stopped.

    Raises:
        DistillError: as ``generate_rationales`` (bad options, a file from another teacher/prompt).
    """
    from mlx_distill.teacher.generate import generate_rationales

    rank, size = distributed.rank(), distributed.size()
    if size == 1:
        return generate_rationales(examples, task, teacher, out_path, limit=limit, on_event=on_event,
                                   should_stop=should_stop, **options)
    if limit is not None:
        examples = examples[:max(limit, 0)]
    out = Path(out_path).expanduser()
    done_ids: list[str] = []
    if rank == 0 and out.exists():
        # With no examples this only checks that the file is this teacher's and prompt's (and cuts
        # a torn line); it loads no model.
        generate_rationales([], task, teacher, out, **options)
        done_ids = list(_read_records(out))
    done = set(distributed.broadcast_json(done_ids))
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
                  "parse_failures": sum(not r.get("parse_ok") for r in wanted)}
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
