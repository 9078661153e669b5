"""Stand-ins for the pipeline process and the chat models: for tests, screenshots and demos of the UI.

``ScriptedStarter`` plays a pipeline by appending events to the run folder's ``events.jsonl``
(the same file the real pipeline writes, so the app's real follow path is exercised); the events
are the ones the real stages send, in their order. ``EchoBackend`` answers chat questions with
fixed text and no models.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

from mlx_distill import events as ev
from mlx_distill.files import JsonlWriter, write_json_atomic, write_text_atomic
from mlx_distill.pipeline import EVENTS_FILE, METRICS_FILE, STATE_FILE
from mlx_distill.tui.processes import LOG_FILE, write_new_run_config

T0 = 1_790_000_000.0  # a fixed clock for reproducible files and screenshots
TEACHER = "mlx-community/Qwen2.5-1.5B-Instruct-4bit"
# What the pipeline says when a run stops (mlx_distill.pipeline.run) and what the trainer says.
RUN_RESUME_HINT = "rerun `mlx-distill run runs/svamp-flan-small/config.toml` to resume"
TRAIN_RESUME_HINT = "continue with resume=True (CLI: the same command with --resume)"


def sample_events(steps: int = 60, questions: int = 40, stopped_at: int | None = None,
                  t0: float = T0) -> list[ev.Event]:
    """A whole, plausible run, as the stages send it: data, teacher, train with evals, evaluate, export."""
    t = t0
    out: list[ev.Event] = []

    def add(event_type, **fields) -> None:
        nonlocal t
        t += 1.0
        out.append(event_type(time=t, **fields))

    add(ev.StageStarted, stage="data")
    add(ev.StageFinished, stage="data", seconds=0.4, detail="700 train / 100 validation / 200 test")
    add(ev.StageStarted, stage="teacher")
    add(ev.TeacherLoaded, model=TEACHER, dtype="4-bit", weight_bytes=870_000_000, seconds=2.1)
    add(ev.MemoryReport, stage="teacher", active=1_400_000_000, peak=1_600_000_000, total=24_000_000_000)
    for done in range(1, questions + 1):
        accepted = done - done // 4
        add(ev.TeacherProgress, done=done, total=questions, accepted=accepted, parse_failures=done // 10,
            generated_tokens=done * 60, generation_tps=41.5, prompt_tps=820.0, eta_seconds=(questions - done) * 1.5,
            latest_id=f"q{done}",
            latest_input="Jack had 8 pens and Mary had 5 pens. Jack gave 3 pens to Mary. How many pens does Jack have now?",
            latest_rationale="Jack starts with 8 pens and gives away 3, so 8 - 3 = 5 are left.",
            latest_answer="8 - 3", latest_accepted=done % 4 != 0)
    add(ev.TeacherReleased, peak_bytes=1_600_000_000, active_bytes_after=40_000_000)
    add(ev.MemoryReport, stage="teacher", active=40_000_000, peak=1_600_000_000, total=24_000_000_000)
    add(ev.StageFinished, stage="teacher", seconds=62.0,
        detail=f"{questions - questions // 4}/{questions} rationales accepted")
    add(ev.StageStarted, stage="train")
    best = 0.0
    for step in range(1, steps + 1):
        if stopped_at is not None and step > stopped_at:
            break
        label = 3.0 * 0.96 ** step + 0.2
        rationale = 3.6 * 0.97 ** step + 0.5
        add(ev.TrainStep, step=step, total_steps=steps, loss=0.5 * label + 0.5 * rationale, label_loss=label,
            rationale_loss=rationale, learning_rate=3e-4, tokens_per_second=1850.0,
            eta_seconds=(steps - step) * 0.5, epoch=step / 20)
        if step % 10 == 0:
            accuracy = min(0.2 + step / 100, 0.9)
            add(ev.EvalResult, step=step, split="validation", accuracy=accuracy, correct=int(accuracy * 100),
                total=100, best=accuracy > best)
            best = max(best, accuracy)
            add(ev.CheckpointSaved, step=step, path=f"runs/svamp-flan-small/train/checkpoints/step-{step:08d}")
    if stopped_at is not None:
        add(ev.Finished, stage="train", stopped=True, summary={"step": stopped_at}, resume_hint=TRAIN_RESUME_HINT)
        add(ev.Finished, stage="run", stopped=True, resume_hint=RUN_RESUME_HINT)
        return out
    add(ev.MemoryReport, stage="train", active=900_000_000, peak=1_200_000_000, total=24_000_000_000)
    add(ev.Finished, stage="train", summary={"steps": steps, "best_step": steps, "best_validation_accuracy": best})
    add(ev.StageFinished, stage="train", seconds=30.0, detail=f"best validation accuracy {best * 100:.1f}%")
    add(ev.StageStarted, stage="evaluate")
    add(ev.EvalResult, step=0, split="test", accuracy=0.71, correct=142, total=200)
    add(ev.StageFinished, stage="evaluate", seconds=4.0, detail="test accuracy 71.0%")
    add(ev.StageStarted, stage="export")
    add(ev.StageFinished, stage="export", seconds=0.3, detail="student saved to runs/svamp-flan-small/student")
    add(ev.Finished, stage="run", summary={"student_test_accuracy": 0.71})
    return out


def append_events(run_dir: Path, events: list[ev.Event]) -> None:
    with JsonlWriter(Path(run_dir) / EVENTS_FILE) as writer:
        writer.write_lines([event.to_json() for event in events])


def fake_student(folder: Path) -> Path:
    """A folder that looks like an exported student (for path discovery; not loadable by MLX)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "config.json", {"model_type": "t5"})
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def make_run(runs_dir: Path, name: str, *, task: str = "svamp", teacher: str = TEACHER,
             student: str = "google/flan-t5-small", method: str = "step-by-step", accuracy: float | None = 0.71,
             created: float = T0, events: list[ev.Event] | None = None, format_version: int = 1,
             with_student: bool = True, state: dict[str, Any] | None = None) -> Path:
    """A finished run folder as the pipeline leaves it (``state``: the stages of an unfinished one)."""
    run_dir = Path(runs_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    write_new_run_config(run_dir, {
        "format_version": format_version, "name": name, "runs_dir": str(Path(runs_dir).resolve()),
        "task": {"name": task, "data": "data/" + task},
        "teacher": {"model": teacher, "enabled": bool(teacher)},
        "train": {"student": student, "method": method, "alpha": 0.5},
    })
    stages = {name: {"status": "done"} for name in ev.STAGES} if state is None else state
    write_json_atomic(run_dir / STATE_FILE, {"format_version": format_version, "stages": stages})
    if accuracy is not None:
        write_json_atomic(run_dir / METRICS_FILE, {"student_test_accuracy": accuracy})
    append_events(run_dir, sample_events(t0=created) if events is None else events)
    if with_student:
        fake_student(run_dir / "student")
    return run_dir


class ScriptedStarter:
    """Plays a pipeline: ``start`` appends the first ``block_after`` script events, ``release`` the rest.

    ``stop`` appends what the real pipeline appends on SIGINT: the trainer's and the run's
    ``Finished(stopped=True)``.
    """

    def __init__(self, script: list[ev.Event] | None = None, block_after: int | None = None,
                 exit_code: int | None = None, log: str = "") -> None:
        self.script = sample_events() if script is None else script
        self.block_after = block_after
        self.started: list[tuple[Path, bool]] = []
        self.stopped: list[Path] = []
        self._position: dict[Path, int] = {}
        self._exit_code = exit_code
        self.log = log  # written to pipeline.log on start, as the real process's output

    def start(self, run_dir: Path, *, demo: bool = False) -> None:
        run_dir = Path(run_dir)
        self.started.append((run_dir, demo))
        if self.log:
            write_text_atomic(run_dir / LOG_FILE, self.log)
        self._position[run_dir] = self._position.get(run_dir, 0)
        if self._position[run_dir] >= len(self.script):
            self._position[run_dir] = 0
        self.release(run_dir, self.block_after)

    def release(self, run_dir: Path, count: int | None = None) -> None:
        """Append the next ``count`` script events (all remaining when None)."""
        run_dir = Path(run_dir)
        start = self._position.get(run_dir, 0)
        end = len(self.script) if count is None else min(start + count, len(self.script))
        append_events(run_dir, self.script[start:end])
        self._position[run_dir] = end

    def stop(self, run_dir: Path) -> bool:
        run_dir = Path(run_dir)
        if not self.is_running(run_dir):
            return False
        self.stopped.append(run_dir)
        sent = self.script[:self._position[run_dir]]
        boundary = next((e for e in reversed(sent) if isinstance(e, (ev.StageStarted, ev.StageFinished))), None)
        training = isinstance(boundary, ev.StageStarted) and boundary.stage == "train"
        stop_events: list[ev.Event] = []
        if training:  # the trainer says it stopped, then the pipeline does
            step = max((e.step for e in sent if isinstance(e, ev.TrainStep)), default=0)
            stop_events.append(ev.Finished(stage="train", stopped=True, summary={"step": step},
                                           resume_hint=TRAIN_RESUME_HINT))
        stop_events.append(ev.Finished(stage="run", stopped=True,
                                       resume_hint=f"rerun `mlx-distill run {run_dir / 'config.toml'}` to resume"))
        append_events(run_dir, stop_events)
        self._position[run_dir] = len(self.script)
        return True

    def is_running(self, run_dir: Path) -> bool:
        run_dir = Path(run_dir)
        return run_dir in self._position and self._position[run_dir] < len(self.script) and run_dir not in self.stopped

    def exit_code(self, run_dir: Path) -> int | None:
        return self._exit_code if Path(run_dir) in self._position else None


class EchoBackend:
    """Chat models without models: fixed answers streamed word by word.

    ``gate``: when given, each stream waits for it before the first word (to test in-flight state).
    """

    ANSWER = "( 8 - 3 )"
    RATIONALE = "Jack gives away 3 of his 8 pens, so 8 - 3 pens are left."
    TEACHER = "Jack had 8 pens and gave 3 away. 8 - 3 = 5. So the answer is 5."

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.loaded: list[str] = []
        self.threads: set[str] = set()
        self.closed = False

    def load_student(self, path: str, weights: str | None = None) -> Any:
        self.threads.add(threading.current_thread().name)
        self.loaded.append(weights or path)
        return path

    def load_teacher(self, path: str) -> Any:
        self.threads.add(threading.current_thread().name)
        self.loaded.append(path)
        return path

    def _words(self, text: str) -> Iterator[str]:
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(10)
        words = text.split(" ")
        for index, word in enumerate(words):
            yield word if index == 0 else " " + word

    def stream_student(self, student: Any, prompt: str, max_tokens: int) -> Iterator[str]:
        return self._words(self.RATIONALE if prompt.startswith("explain:") else self.ANSWER)

    def stream_teacher(self, teacher: Any, question: str, max_tokens: int) -> Iterator[str]:
        return self._words(self.TEACHER)

    def close(self) -> None:
        self.closed = True
