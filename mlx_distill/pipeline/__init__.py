"""The pipeline: every stage in one run folder, resumable (``run_pipeline``), and the run-folder
API that the pipeline writes through and the UI reads through (``runfolder``)."""

from mlx_distill.pipeline.report import write_report
from mlx_distill.pipeline.run import run_folder_for, run_pipeline
from mlx_distill.pipeline.runfolder import (
    CONFIG_FILE,
    EVENTS_FILE,
    METRICS_FILE,
    PID_FILE,
    STATE_FILE,
    EventTail,
    RunFolder,
    RunInfo,
    StudentSource,
    check_format,
    exported_student,
    is_run_dir,
    list_runs,
    read_events,
    read_run,
    read_run_config,
    read_state,
    run_status,
    running_pid,
    stage_states,
    student_accuracy,
    student_source,
    teacher_of,
)

__all__ = ["run_pipeline", "run_folder_for", "write_report", "RunFolder", "RunInfo", "EventTail", "StudentSource",
           "CONFIG_FILE", "EVENTS_FILE", "METRICS_FILE", "PID_FILE", "STATE_FILE", "check_format", "exported_student",
           "is_run_dir", "list_runs", "read_events", "read_run", "read_run_config", "read_state", "run_status",
           "running_pid", "stage_states", "student_accuracy", "student_source", "teacher_of"]
