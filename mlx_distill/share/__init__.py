"""Share a run's student: export it (optionally quantized, measured against the float one), write
its model card from the run's metrics, and push it to the Hugging Face hub."""

from mlx_distill.share.card import CARD_FILE, model_card_text, write_model_card
from mlx_distill.share.export import (
    EXPORT_DIR,
    ExportResult,
    StudentFigures,
    export_name,
    export_student,
    figures_dict,
    run_student,
    weight_bytes,
)
from mlx_distill.share.push import PushPlan, check_repo_id, find_token, plan_push, push_folder
from mlx_distill.share.runmetrics import read_checked_metrics

__all__ = ["CARD_FILE", "EXPORT_DIR", "ExportResult", "PushPlan", "StudentFigures", "check_repo_id", "export_name",
           "export_student", "figures_dict", "find_token", "model_card_text", "plan_push", "push_folder",
           "read_checked_metrics", "run_student", "weight_bytes", "write_model_card"]
