"""Train a T5 student: Distilling step-by-step (one T5, ``predict:`` and ``explain:`` tasks,
loss = alpha * label + (1 - alpha) * rationale) and the baselines, resumable, reporting events.

``train`` runs the loop and exports the best student; ``evaluate`` scores a student by generation
(the pipeline's evaluate stage scores the test split with it, once).
"""

from mlx_distill.config import TrainConfig
from mlx_distill.train.checkpoint import load_weights
from mlx_distill.train.evaluate import EvalSummary, evaluate
from mlx_distill.train.loop import TrainResult, train
from mlx_distill.train.meta import STUDENT_META, read_student_meta, student_method
from mlx_distill.train.select import Candidate, candidate_name, choose, payoff, plan_candidates, verdict

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "EvalSummary", "STUDENT_META", "load_weights", "read_student_meta",
           "student_method", "Candidate", "candidate_name", "choose", "payoff", "plan_candidates", "verdict"]
