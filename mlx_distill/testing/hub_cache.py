"""A Hugging Face cache filled by hand, for tests: no hub is reachable where tests run.

``put_dataset`` writes parquet files into ``datasets--ORG--NAME/snapshots/<sha>/...`` and points
``refs/<revision>`` at that snapshot: the layout ``huggingface_hub`` itself writes, so the loader
under test goes through the real ``snapshot_download`` with ``HF_HUB_OFFLINE=1``. Only the hub
(the network side) is missing; everything on this machine is the real code path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlx_distill.data import DEFAULT_DATASETS


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


def offline_hf_cache(home: Path, monkeypatch: Any) -> Path:
    """An empty HF cache under ``home`` with the hub switched off: in the environment (for
    subprocesses) and in ``huggingface_hub.constants`` (read once at import, for this process)."""
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def svamp_record(i: int) -> dict:
    return {"ID": f"chal-{i}", "Body": f"Jack had {i} apples.", "Question": f"How many now{i}?",
            "Equation": f"( {i}.0 + 1.0 )", "Answer": float(i + 1), "Type": "Addition",
            "question_concat": f"Jack had {i} apples. How many now{i}?"}


def put_svamp(cache: Path, records: list[dict]) -> None:
    # The hub copy ships its own 700/300 split, in its own order.
    shuffled = [records[i] for i in np.random.RandomState(5).permutation(len(records))]
    cut = len(records) * 7 // 10
    put_dataset(cache, "ChilleD/SVAMP", {"data/train-00000-of-00001.parquet": shuffled[:cut],
                                         "data/test-00000-of-00001.parquet": shuffled[cut:]})


def put_cqa(cache: Path, n_train: int = 20, n_dev: int = 8, n_test: int = 5) -> None:
    def rows(prefix: str, n: int, labelled: bool = True) -> list[dict]:
        return [{"id": f"{prefix}{i}", "question": f"Where is thing {i}?", "question_concept": "thing",
                 "choices": {"label": list("ABCDE"), "text": [f"place {i}{c}" for c in "abcde"]},
                 "answerKey": "ABCDE"[i % 5] if labelled else ""} for i in range(n)]

    put_dataset(cache, "tau/commonsense_qa", {
        "data/train-00000-of-00001.parquet": rows("t", n_train),
        "data/validation-00000-of-00001.parquet": rows("v", n_dev),
        "data/test-00000-of-00001.parquet": rows("x", n_test, labelled=False)},
        revision=DEFAULT_DATASETS["cqa"].source.revision)

    def cose(prefix: str, n: int) -> list[dict]:
        return [{"id": f"{prefix}{i}", "question": f"Where is thing {i}?", "choices": [f"place {i}{c}" for c in "abcde"],
                 "answer": f"place {i}{'abcde'[i % 5]}", "abstractive_explanation": f"because {prefix}{i}",
                 "extractive_explanation": "thing"} for i in range(n)]

    put_dataset(cache, "Salesforce/cos_e", {"v1.11/train-00000-of-00001.parquet": cose("t", n_train),
                                            "v1.11/validation-00000-of-00001.parquet": cose("v", n_dev)},
                revision=DEFAULT_DATASETS["cqa"].rationales.revision)
