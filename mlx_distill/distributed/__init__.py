"""Several Macs as one: ``mx.distributed`` collectives (rank, size, sums, broadcasts) that every
stage may use, and relaunching a run on every host through ``mlx.launch`` (``launch``)."""

from mlx_distill.distributed.collectives import (
    RELAY_ENV,
    RELAY_PREFIX,
    all_sum,
    any_rank,
    broadcast_json,
    broadcast_tree,
    gather_bytes,
    gather_json,
    group,
    is_main,
    part_path,
    rank,
    relay_to_stdout,
    shard,
    size,
    with_rank,
)
from mlx_distill.distributed.launch import launch_command, read_hostfile, run_launched

__all__ = ["RELAY_ENV", "RELAY_PREFIX", "all_sum", "any_rank", "broadcast_json", "broadcast_tree", "gather_bytes",
           "gather_json", "group", "is_main", "launch_command", "part_path", "rank", "read_hostfile", "relay_to_stdout",
           "run_launched", "shard", "size", "with_rank"]
