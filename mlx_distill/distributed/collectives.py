"""Several processes (Macs) working as one: the ``mx.distributed`` group and small collectives.

Processes are started by MLX's own launcher, ``mlx.launch`` (ring backend over TCP, or JACCL over
Thunderbolt 5), which sets each process's rank; without it the group has size 1 and every helper
here is a cheap no-op, so single-machine code paths are unchanged.

Every collective must be called by all ranks in the same order, or they wait for each other
forever; the helpers take care to make one collective call each, whatever the rank.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

from mlx_distill.events import Event, OnEvent

T = TypeVar("T")

# Environment variable set by ``mlx-distill run --hosts``: ranks > 0 then print their events as
# lines starting with RELAY_PREFIX on stdout and the launching process appends them to the run's
# events.jsonl (the run folder is rank 0's).
RELAY_ENV = "MLX_DISTILL_RELAY_EVENTS"
RELAY_PREFIX = "@mlx-distill-event "

_group = None


def group():
    """The process group (initialised once). Size 1 when the process was not launched by mlx.launch."""
    global _group
    if _group is None:
        import mlx.core as mx

        _group = mx.distributed.init()
    return _group


def _launched() -> bool:
    # mlx.launch sets MLX_RANK (ring/jaccl) or the MPI variables; without them init() would only
    # make a singleton group, so skip importing mlx at all for the common single-process case.
    return any(k in os.environ for k in ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"))


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return group().rank() if _launched() else 0


def size() -> int:
    """How many processes work together (1 when not distributed)."""
    return group().size() if _launched() else 1


def is_main() -> bool:
    """True on rank 0, the only rank that writes the run folder."""
    return rank() == 0


def shard(items: Sequence[T], rank: int, size: int) -> list[T]:
    """The items rank ``rank`` of ``size`` works on: every ``size``-th item starting at ``rank``.

    Strided rather than contiguous so every rank gets a similar mix of short and long items. The
    shards are disjoint and together hold every item once.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in a group of size {size}")
    return list(items[rank::size])


def part_path(out_path: str | Path, rank: int, size: int) -> Path:
    """A rank's own file beside ``out_path``: ``rationales.jsonl`` -> ``rationales.rank1-of-2.jsonl``."""
    out = Path(out_path)
    return out.with_name(f"{out.stem}.rank{rank}-of-{size}{out.suffix}")


# -- collectives ----------------------------------------------------------------------------------
def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of a short list of numbers over all ranks (float64 on the CPU)."""
    if size() == 1:
        return [float(v) for v in values]
    import mlx.core as mx

    # float32 holds integer counts exactly up to 2**24; two halves keep larger counts exact.
    high = [float(int(v) // 4096) for v in values]
    low = [float(v) - h * 4096 for v, h in zip(values, high)]
    summed = mx.distributed.all_sum(mx.array(high + low, dtype=mx.float32), stream=mx.cpu).tolist()
    n = len(values)
    return [summed[i] * 4096 + summed[n + i] for i in range(n)]


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (a collective stop decision)."""
    return all_sum([1.0 if flag else 0.0])[0] > 0


def gather_bytes(data: bytes) -> list[bytes]:
    """Every rank's ``data``, in rank order, on every rank."""
    if size() == 1:
        return [data]
    import mlx.core as mx
    import numpy as np

    n, me = size(), rank()
    lengths = [0.0] * n
    lengths[me] = float(len(data))
    lengths = [int(v) for v in all_sum(lengths)]
    longest = max(1, max(lengths))
    padded = np.zeros(longest, dtype=np.uint8)
    padded[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    gathered = np.array(mx.distributed.all_gather(mx.array(padded)[None], stream=mx.cpu))
    return [gathered[i, : lengths[i]].tobytes() for i in range(n)]


def broadcast_json(value: Any) -> Any:
    """Rank 0's ``value`` (anything JSON can hold) on every rank; other ranks' values are ignored."""
    if size() == 1:
        return value
    data = json.dumps(value).encode() if is_main() else b""
    return json.loads(gather_bytes(data)[0])


def gather_json(value: Any) -> list[Any]:
    """Every rank's ``value`` (JSON-able), in rank order, on every rank."""
    if size() == 1:
        return [value]
    return [json.loads(blob) for blob in gather_bytes(json.dumps(value).encode())]


def broadcast_tree(tree: Any) -> Any:
    """Rank 0's arrays (a tree of mx.array, e.g. model parameters) on every rank, same structure."""
    if size() == 1:
        return tree
    import mlx.core as mx
    from mlx.utils import tree_map

    keep = is_main()

    def send(x):
        if not isinstance(x, mx.array):
            return x
        summed = mx.distributed.all_sum(x if keep else mx.zeros_like(x), stream=mx.cpu)
        return summed.astype(x.dtype)

    tree = tree_map(send, tree)
    mx.eval(tree)
    return tree


# -- events from other ranks ---------------------------------------------------------------------
def with_rank(on_event: OnEvent, rank_: int) -> OnEvent:
    """``on_event`` receiving each event with its ``rank`` field set to ``rank_``."""
    if rank_ == 0:
        return on_event

    def send(event: Event) -> None:
        on_event(dataclasses.replace(event, rank=rank_))

    return send


def relay_to_stdout(event: Event) -> None:
    """Print an event as one prefixed JSON line; ``mlx-distill run --hosts`` collects them."""
    import sys

    sys.stdout.write(RELAY_PREFIX + event.to_json() + "\n")
    sys.stdout.flush()
