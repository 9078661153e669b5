"""The built-in tasks' datasets from the Hugging Face hub: fetched once into the user's HF cache, then offline.

A hub source is written ``hf:ORG/NAME[:CONFIG][@REVISION]`` (``hf:`` may be left out when the text
is not a local path). Files come through ``huggingface_hub.snapshot_download`` (the HF cache,
its progress bars, ``HF_HUB_OFFLINE``) and are read with ``pyarrow.parquet``: the hub's parquet
files are the whole dataset, so the ``datasets`` library (and its second, Arrow-format cache) is
not needed.

The splits stay the paper's whatever split a hub copy ships: SVAMP's train and test files are put
back together in ``ID`` order (``chal-1`` ... ``chal-1000``, the order of the authors' SVAMP.json)
and split 800/200 by the paper's seeded permutation; CommonsenseQA's dev split is the test split
(its hub test split has no answers); validation is carved from train where a dataset has none.

Revisions: the CommonsenseQA and CoS-E copies are pinned to the commits that added their parquet
files (the commit shas were read from the hub's web pages). For SVAMP, e-SNLI and ANLI no full
commit sha could be confirmed from where this was built (no hub access), so they follow ``main``
(e-SNLI: the hub's own parquet conversion branch); pin one with ``@REVISION`` in ``task.data``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mlx_distill.data.readers import require_rows
from mlx_distill.data.tasks import (Splits, cqa_example, join_rationales_by_id, nli_example, svamp_example,
                                    svamp_paper_split)
from mlx_distill.errors import DistillError

HUB_PREFIX = "hf:"
_SPEC = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)(?::(?P<config>[\w.,-]+))?(?:@(?P<revision>[\w./-]+))?$")


@dataclass(frozen=True)
class HubSource:
    """A dataset repo on the hub, a task-specific subset (``config``) and a revision (None: main)."""

    repo_id: str
    config: str = ""
    revision: str | None = None

    @property
    def spec(self) -> str:
        config = f":{self.config}" if self.config else ""
        revision = f"@{self.revision}" if self.revision else ""
        return f"{HUB_PREFIX}{self.repo_id}{config}{revision}"


@dataclass(frozen=True)
class HubDataset:
    """What a built-in task reads from the hub by default, and its size on the hub (dataset card)."""

    source: HubSource
    size: str
    rationales: HubSource | None = None


COSE = HubSource("Salesforce/cos_e", "v1.11", "247d103b79d6864fe83c12f22f835a1f9dbe3bdb")
DEFAULT_DATASETS = {
    "svamp": HubDataset(HubSource("ChilleD/SVAMP"), "166 kB (1,000 problems)"),
    "cqa": HubDataset(HubSource("tau/commonsense_qa", revision="94630fe30dad47192a8546eb75f094926d47e155"),
                      "1.6 MB (12,102 questions) + CoS-E v1.11 explanations 1.9 MB", rationales=COSE),
    "esnli": HubDataset(HubSource("esnli", revision="refs/convert/parquet"),
                        "about 200 MB (570k pairs; the card gives 195 MiB for the original CSVs)"),
    "anli": HubDataset(HubSource("facebook/anli", "r1"), "3.8 MB for round 1 (18,946 pairs)"),
}


def parse_hub_spec(text: str) -> HubSource | None:
    """The hub source ``text`` names, or None when it is a local path (or does not look like a hub id)."""
    text = text.strip()
    explicit = text.startswith(HUB_PREFIX)
    if not explicit and (Path(text).expanduser().exists() or text.startswith((".", "/", "~"))):
        return None
    match = _SPEC.match(text.removeprefix(HUB_PREFIX))
    if match is None or (not explicit and "/" not in match["repo"]):
        if explicit:
            raise DistillError(f"{text!r} is not a hub dataset; write hf:ORG/NAME[:CONFIG][@REVISION], "
                               "e.g. hf:facebook/anli:r1")
        return None
    return HubSource(match["repo"], match["config"] or "", match["revision"])


def default_source(task: str) -> HubSource:
    """The hub copy a built-in task reads when ``task.data`` is left out."""
    if task not in DEFAULT_DATASETS:
        raise DistillError(f"the {task} task has no default dataset; give task.data (--data), its file or folder")
    return DEFAULT_DATASETS[task].source


def fetch_snapshot(source: HubSource, patterns: list[str], task: str) -> Path:
    """The cached snapshot folder holding ``patterns`` of ``source``, downloaded first when online."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    default = DEFAULT_DATASETS.get(task)
    fetch = f"mlx-distill fetch-data {task}"
    if default is None or source not in (default.source, default.rationales):
        fetch += f" --data {source.spec}"
    try:
        return Path(snapshot_download(source.repo_id, repo_type="dataset", revision=source.revision,
                                      allow_patterns=patterns))
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its parent class
        if constants.is_offline_mode():
            raise DistillError(f"dataset {source.spec} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                               f"fetch it once with network access: {fetch}") from None
        raise DistillError(f"dataset {source.spec} is not cached and the hub cannot be reached; connect once "
                           f"and run: {fetch}") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise DistillError(f"dataset {source.spec} not found on the hub ({type(error).__name__}); check the id "
                           "and revision, or give a local file or folder") from None
    except (HfHubHTTPError, OSError) as error:
        raise DistillError(f"dataset {source.spec}: download failed ({error}); rerun {fetch} "
                           "(finished files are kept)") from None


def _split_files(folder: Path, subdir: str, split: str) -> list[Path]:
    """The parquet files of ``split`` in any of the hub's layouts (``data/train-00000-of-00001.parquet``,
    ``plain_text/train/0000.parquet``, ``plain_text/anli-train_r1.parquet``)."""
    for pattern in (f"{split}-*.parquet", f"{split}/*.parquet", f"*-{split}.parquet", f"{split}.parquet"):
        found = sorted((folder / subdir).glob(pattern))
        if found:
            return found
    return []


def _patterns(subdir: str, splits: list[str]) -> list[str]:
    return [p for s in splits for p in (f"{subdir}/{s}-*.parquet", f"{subdir}/{s}/*.parquet",
                                        f"{subdir}/*-{s}.parquet", f"{subdir}/{s}.parquet")]


def _read_rows(folder: Path, source: HubSource, subdir: str, split: str,
               required: bool = True) -> list[tuple[dict, str]]:
    """Every record of a split's parquet files, each with where it came from (``repo/file:row``)."""
    import pyarrow.parquet as pq

    files = _split_files(folder, subdir, split)
    if not files:
        if not required:
            return []
        raise DistillError(f"dataset {source.spec}: no parquet file for the {split!r} split under {subdir}/ "
                           f"in {folder}; the hub copy's layout changed? pin a revision with @REVISION")
    rows = []
    for path in files:
        name = f"{source.repo_id}/{path.relative_to(folder)}"
        try:
            records = pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises several types for a broken file
            raise DistillError(f"{path}: not a readable parquet file ({error}); delete it and fetch again") from None
        rows.extend((rec, f"{name}:{i + 1}") for i, rec in enumerate(records))
    return rows


def load_hub_task(task: str, source: HubSource, notes: list[str]) -> Splits:
    """A built-in task's splits from a hub dataset in its published layout."""
    if task not in _LOADERS:
        raise DistillError(f"hub datasets are read for the built-in tasks ({', '.join(_LOADERS)}), not {task!r}; "
                           "give a local file or folder")
    splits = _LOADERS[task](source, notes)
    notes.append(f"data from the hub: {source.spec}")
    return splits


def _svamp(source: HubSource, notes: list[str]) -> Splits:
    subdir = source.config or "data"
    folder = fetch_snapshot(source, _patterns(subdir, ["train", "test"]), "svamp")
    records = _read_rows(folder, source, subdir, "train") + _read_rows(folder, source, subdir, "test", required=False)
    rows = [svamp_example(rec, where) for rec, where in records]
    require_rows(rows, folder)
    # The authors' split permutes the problems in SVAMP.json order, which is ID order.
    rows.sort(key=lambda row: _id_order(row[0].id))
    notes.append("the hub copy's own train/test split is ignored: all problems in ID order, then the paper's split")
    return svamp_paper_split(rows, notes)


def _id_order(ex_id: str) -> tuple[str, int]:
    prefix, _, number = ex_id.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (ex_id, -1)


def _cqa(source: HubSource, notes: list[str]) -> Splits:
    subdir = source.config or "data"
    folder = fetch_snapshot(source, _patterns(subdir, ["train", "validation"]), "cqa")
    splits: Splits = {}
    for split, ours in (("train", "train"), ("validation", "test")):
        rows = []
        for rec, where in _read_rows(folder, source, subdir, split):
            choices = _get(rec, "choices", where)
            labels, texts = _get(choices, "label", where, "choices.label"), _get(choices, "text", where, "choices.text")
            rows.append(cqa_example(str(_get(rec, "id", where)), str(_get(rec, "question", where)),
                                    [str(k) for k in labels], [str(t) for t in texts],
                                    str(_get(rec, "answerKey", where)), where))
        splits[ours] = rows
    notes.append("test: the dataset's validation (dev) split, as in the paper; its test split has no answers")
    return splits


def join_cose(splits: Splits, notes: list[str], source: HubSource = COSE) -> Splits:
    """CoS-E's open-ended explanations (``abstractive_explanation``) as the human rationales, by id."""
    folder = fetch_snapshot(source, _patterns(source.config, ["train", "validation"]), "cqa")
    by_id = {}
    for split in ("train", "validation"):
        for rec, where in _read_rows(folder, source, source.config, split):
            by_id[str(_get(rec, "id", where))] = str(_get(rec, "abstractive_explanation", where) or "").strip()
    return join_rationales_by_id(by_id, splits, notes, source.spec)


def _esnli(source: HubSource, notes: list[str]) -> Splits:
    subdir = source.config or "plain_text"
    folder = fetch_snapshot(source, _patterns(subdir, ["train", "validation", "test"]), "esnli")
    splits: Splits = {}
    for split in ("train", "validation", "test"):
        rows, unlabelled = [], 0
        for rec, where in _read_rows(folder, source, subdir, split):
            if _get(rec, "label", where) == -1:  # the hub's mark for a pair without a gold label
                unlabelled += 1
                continue
            rows.append(nli_example(_get(rec, "premise", where), _get(rec, "hypothesis", where), rec["label"],
                                    rec.get("explanation_1"), None, where))
        splits[split] = rows
        if unlabelled:
            notes.append(f"{split}: {unlabelled} pairs without a gold label (-1) left out")
    return splits


def _anli(source: HubSource, notes: list[str]) -> Splits:
    subdir = "plain_text"
    rounds = [r.strip().lower() for r in (source.config or "r1").split(",") if r.strip()]
    if rounds == ["all"]:
        rounds = ["r1", "r2", "r3"]
    if not rounds or any(r not in ("r1", "r2", "r3") for r in rounds):
        raise DistillError(f"dataset {source.spec}: ANLI rounds are r1, r2, r3 (or all), e.g. hf:facebook/anli:r1")
    names = [f"{split}_{r}" for r in rounds for split in ("train", "dev", "test")]
    folder = fetch_snapshot(source, _patterns(subdir, names), "anli")
    splits: Splits = {"train": [], "validation": [], "test": []}
    for r in rounds:
        for split, ours in (("train", "train"), ("dev", "validation"), ("test", "test")):
            for rec, where in _read_rows(folder, source, subdir, f"{split}_{r}"):
                splits[ours].append(nli_example(_get(rec, "premise", where), _get(rec, "hypothesis", where),
                                                _get(rec, "label", where), rec.get("reason"), rec.get("uid"), where))
    if rounds != ["r1"]:
        notes.append(f"rounds {', '.join(rounds)} combined (the paper uses R1 only: hf:facebook/anli:r1)")
    return splits


def _get(rec: Any, name: str, where: str, label: str | None = None) -> Any:
    if not isinstance(rec, dict) or name not in rec:
        raise DistillError(f"{where}: missing column {label or name!r}; the hub copy's layout changed? "
                           "pin a revision with @REVISION or give a local copy")
    return rec[name]


_LOADERS: dict[str, Callable[[HubSource, list[str]], Splits]] = {
    "svamp": _svamp, "cqa": _cqa, "esnli": _esnli, "anli": _anli}

