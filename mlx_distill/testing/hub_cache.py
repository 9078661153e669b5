"""A Hugging Face cache filled by hand, for tests: no hub is reachable where tests run.

``put_dataset`` writes parquet files into ``datasets--ORG--NAME/snapshots/<sha>/...`` and points
``refs/<revision>`` at that snapshot: the layout ``huggingface_hub`` itself writes, so the loader
under test goes through the real ``snapshot_download`` with ``HF_HUB_OFFLINE=1``. Only the hub
(the network side) is missing; everything on this machine is the real code path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def put_dataset(cache: Path, repo_id: str, files: dict[str, list[dict]], revision: str | None = None) -> Path:
    """Write ``files`` (path in the repo -> records) as one cached snapshot of ``repo_id``; its folder.

    ``revision`` is a commit sha (the snapshot's name) or a branch such as ``refs/convert/parquet``
    (a made-up sha, with ``refs/<branch>`` pointing at it); None means ``main``.
    """
    is_sha = revision is not None and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)
    sha = revision if is_sha else hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    storage = cache / f"datasets--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / sha
    for name, records in files.items():
        path = snapshot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(records), path)
    ref = storage / "refs" / (revision if revision and not is_sha else "main")
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(sha)
    return snapshot
