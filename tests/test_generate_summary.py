"""`mlx-distill generate` ends with a summary line that says how many answers had a <think> block
stripped (RationaleSummary.thinking), only when some had.

The tiny teacher never writes a think block, so the test marks records of a finished file as a
thinking teacher leaves them; the rerun resumes that file and the real CLI prints the count.
"""

from __future__ import annotations

import json

from mlx_distill.commands.demo import demo_data_dir
from mlx_distill.testing.cli_runner import run_cli


def _generate(teacher, out):
    return run_cli("generate", "--task", "jsonl", "--data", demo_data_dir(), "--teacher", teacher, "--out", out,
                   "--limit", "4", "--batch-size", "4", "--max-tokens", "4", "--filter", "all",
                   "--allow-sleep", "--no-notify")


def test_the_summary_line_counts_think_blocks_only_when_there_are_some(tmp_path, demo_models):
    out = tmp_path / "r.jsonl"
    first = _generate(demo_models["teacher"], out)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("4/4 examples in ") and "<think>" not in first.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    for record in records[:3]:
        record["thinking"] = True
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = _generate(demo_models["teacher"], out)
    assert again.returncode == 0, again.stderr
    assert "parse failures, 3 had <think> blocks stripped; " in again.stdout
