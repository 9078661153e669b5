"""The prompt lab: find the teacher prompt that works on a small sample before the full stage.

``try_prompt`` runs the real teacher stage on a seeded sample of validation questions and scores
it (``Trial``); ``search_exemplars`` builds few-shot sets from the training rows, keeps the best on
one sample and reports its gain on a second, disjoint one; ``adopt_prompt`` writes the chosen
prompt into the run's config. Results live in the run folder's ``prompt-lab/``.
"""

from mlx_distill.prompt_lab.exemplars import answer_position, candidate_sets, with_rationales
from mlx_distill.prompt_lab.lab import (
    LAB_DIR,
    MIN_SAMPLE,
    SearchResult,
    adopt_prompt,
    choose_set,
    current_prompt_text,
    draw_samples,
    lab_dir_for,
    search_exemplars,
    try_prompt,
)
from mlx_distill.prompt_lab.trial import (
    Trial,
    TrialExample,
    TrialStopped,
    prompt_hash,
    read_trials,
    save_prompt,
    trial_examples,
)

__all__ = ["LAB_DIR", "MIN_SAMPLE", "SearchResult", "Trial", "TrialExample", "TrialStopped", "adopt_prompt", "choose_set",
           "answer_position", "candidate_sets", "current_prompt_text", "draw_samples", "lab_dir_for",
           "prompt_hash", "read_trials", "save_prompt",
           "search_exemplars", "trial_examples", "try_prompt", "with_rationales"]
