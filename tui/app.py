"""DistillApp: the `mlx-distill` terminal UI.

The app owns the current run (a run folder), follows its ``events.jsonl`` on a timer and feeds
the dashboard; it starts and stops pipeline *processes* through a ``PipelineStarter``, so closing
the UI never stops a run; chat goes through one MLX engine thread (``mlx_distill.tui.engine``).
Everything a test needs to replace is a constructor argument.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen

from mlx_distill.catalog import usable_memory_bytes
from mlx_distill.config import parse_config
from mlx_distill.data import load_task
from mlx_distill.errors import DistillError
from mlx_distill.events import Event, Failed, Finished, Log, Paused
from mlx_distill.machine import CONTINUE_FILE
from mlx_distill.pipeline import (EVENTS_FILE, EventTail, StudentSource, read_run, read_run_config, read_state, stage_states,
                                  student_source, teacher_of)
from mlx_distill.platform import format_bytes
from mlx_distill.prompt_lab import (Trial, TrialExample, adopt_prompt, current_prompt_text, lab_dir_for, read_trials,
                                    save_prompt, trial_examples, try_prompt)
from mlx_distill.teacher import BUILTIN_TASKS, parse_prompt_text
from mlx_distill.tui.engine import ChatBackend, ChatRequest, Engine, Job, JobDone, JobFailed
from mlx_distill.tui.processes import (LOG_FILE, PipelineStarter, SubprocessStarter, log_tail, new_run_dir,
                                      write_new_run_config)
from mlx_distill.tui.model_choices import ModelChoice, find_choice, is_downloaded, load_choices
from mlx_distill.tui.messages import EngineEvent
from mlx_distill.tui.screens.chat import ChatScreen
from mlx_distill.tui.screens.dashboard import DashboardScreen
from mlx_distill.tui.screens.modals import ConfirmScreen, MessageScreen
from mlx_distill.tui.screens.new_run import NewRunScreen
from mlx_distill.tui.screens.prompt_lab import PromptLabScreen
from mlx_distill.tui.screens.runs import RunsScreen

LIGHT_THEME, DARK_THEME = "textual-light", "textual-dark"
# A loaded model takes about this much more memory than its weight files.
MEMORY_OVERHEAD = 1.25


class DistillApp(App):
    """Start a distillation, watch it live, chat with the student it made."""

    CSS_PATH = "app.tcss"
    TITLE = "mlx-distill"
    SCREENS = {"runs": RunsScreen, "new": NewRunScreen, "dashboard": DashboardScreen, "chat": ChatScreen,
               "lab": PromptLabScreen}
    MODES = {"runs": "runs", "new": "new", "dashboard": "dashboard", "chat": "chat", "lab": "lab"}
    DEFAULT_MODE = "runs"
    BINDINGS = [
        Binding("f1", "switch_mode('runs')", "Runs"),
        Binding("f2", "switch_mode('new')", "New"),
        Binding("f3", "switch_mode('dashboard')", "Dash"),
        Binding("f4", "switch_mode('chat')", "Chat"),
        Binding("f5", "switch_mode('lab')", "Lab"),
        Binding("ctrl+t", "toggle_dark", "Light/dark", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    run_dir: var[Path | None] = var(None, init=False)

    def __init__(
        self,
        runs_dir: Path | str = "runs",
        *,
        run_dir: Path | str | None = None,
        mode: str | None = None,
        starter: PipelineStarter | None = None,
        chat_backend: ChatBackend | None = None,
        choices: list[ModelChoice] | None = None,
        available_memory: Callable[[], int] = usable_memory_bytes,
        poll_interval: float = 0.5,
        show_timing: bool = True,
    ) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.starter: PipelineStarter = starter if starter is not None else SubprocessStarter()
        self.chat_backend = chat_backend
        self.available_memory = available_memory
        self._choices = choices
        self.poll_interval = poll_interval
        # False hides ETAs and latencies (they change from run to run; snapshots need fixed text).
        self.show_timing = show_timing
        self.history: list[Event] = []
        self.engine: Engine | None = None
        self._tail: EventTail | None = None
        self._start_run_dir = Path(run_dir) if run_dir is not None else None
        self._start_mode = mode
        self._crash_reported = False
        # Whether a pipeline process holds the current run (a killed one never does).
        self.pipeline_alive = False

    # ---- start-up and shut-down ----

    def on_mount(self) -> None:
        self.set_interval(self.poll_interval, self.poll_run)
        if self._start_run_dir is not None:
            self.open_run(self._start_run_dir, self._start_mode or "dashboard")
        elif self._start_mode:
            self.switch_mode(self._start_mode)

    def on_unmount(self) -> None:
        if self.engine is not None:
            self.engine.close()

    @property
    def model_choices(self) -> list[ModelChoice]:
        if self._choices is None:
            self._choices = load_choices(self.available_memory())
        return self._choices

    # ---- the current run ----

    def open_run(self, run_dir: Path | str, mode: str = "dashboard") -> bool:
        """Make ``run_dir`` the current run and show it; a folder we cannot read is explained."""
        run_dir = Path(run_dir)
        info = read_run(run_dir)
        if info.problem:
            self.show_error("Cannot open this run", info.problem)
            return False
        if run_dir != self.run_dir:
            self.run_dir = run_dir
        self.switch_mode(mode)
        return True

    def watch_run_dir(self, run_dir: Path | None) -> None:
        self.history = []
        self._crash_reported = False
        self._tail = EventTail(run_dir / EVENTS_FILE) if run_dir is not None else None
        self.sub_title = run_dir.name if run_dir is not None else ""
        dashboard = self.get_screen("dashboard", DashboardScreen)
        if dashboard.is_mounted:
            dashboard.reset([])
        chat = self.get_screen("chat", ChatScreen)
        if chat.is_mounted:
            chat.load_run()
        self.poll_run(notify=False)  # the replay of what happened before: no toasts
        if run_dir is not None and not self.history and not self.is_running():
            # A pipeline that died before its first event left only its log: show why.
            tail = log_tail(run_dir, 5).strip()
            if tail:
                self._show([Log(message=line, level="warning") for line in tail.splitlines()], notify=False)

    def poll_run(self, notify: bool = True) -> None:
        """Read the events the pipeline appended since the last poll and show them."""
        if self._tail is None or self.run_dir is None:
            return
        new = self._tail.read_new()
        new += self._crash_events(new)
        alive = self.is_running()
        changed = alive != self.pipeline_alive
        self.pipeline_alive = alive
        if new:
            self._show(new, notify)
        elif changed:
            dashboard = self.get_screen("dashboard", DashboardScreen)
            if dashboard.is_mounted:
                dashboard.redraw()

    def _show(self, new: list[Event], notify: bool = True) -> None:
        self.history.extend(new)
        dashboard = self.get_screen("dashboard", DashboardScreen)
        if dashboard.is_mounted:
            dashboard.show_events(new)
        for event in new if notify else ():
            if isinstance(event, Failed):
                self.notify(event.error, title=f"Run failed in {event.stage}", severity="error", timeout=10)
            elif isinstance(event, Finished) and event.stage == "run":
                message = "stopped; finished work is kept" if event.stopped else "finished"
                self.notify(f"{self.run_dir.name} {message}", title="Run")
            elif isinstance(event, Paused):
                self.notify(f"On battery at {event.battery_percent}%: plug in, or press r to go on.", title="Paused",
                            severity="warning", timeout=10)

    def _crash_events(self, new: list[Event]) -> list[Event]:
        """A Failed event for a pipeline process that died without saying so (its log tail)."""
        if self._crash_reported or self.run_dir is None:
            return []
        code = self.starter.exit_code(self.run_dir)
        if code in (None, 0):
            return []
        if any(isinstance(event, (Failed, Finished)) and getattr(event, "stage", "") == "run" for event in new):
            return []
        last = self.history[-1] if self.history else None
        if isinstance(last, Failed) or (isinstance(last, Finished) and last.stage == "run"):
            return []
        self._crash_reported = True
        tail = log_tail(self.run_dir, 3).strip().splitlines()
        reason = tail[-1] if tail else "no output"
        return [Failed(stage="run", error=f"pipeline exited with status {code}: {reason} "
                                         f"(see {self.run_dir / LOG_FILE})")]

    def is_running(self) -> bool:
        return self.run_dir is not None and self.starter.is_running(self.run_dir)

    # ---- starting, stopping, resuming ----

    def start_run(self, config: dict[str, Any], summary: str = "") -> Path | None:
        """Write ``config`` into a new run folder, start its pipeline and show the dashboard."""
        try:
            run_dir = new_run_dir(self.runs_dir, str(config.get("name") or "run"))
            write_new_run_config(run_dir, {**config, "name": run_dir.name})
            self.starter.start(run_dir)
        except (DistillError, OSError) as error:
            self.show_error("Cannot start the run", str(error))
            return None
        self.notify(f"{run_dir.name} started" + (f" ({summary})" if summary else ""), title="Run")
        self.open_run(run_dir, "dashboard")
        return run_dir

    def action_start_demo(self) -> None:
        """Start the offline demo (tiny models, every stage for real) in a new run folder."""
        try:
            run_dir = new_run_dir(self.runs_dir, "demo")
            self.starter.start(run_dir, demo=True)
        except (DistillError, OSError) as error:
            self.show_error("Cannot start the demo", str(error))
            return
        self.notify(f"{run_dir.name} started", title="Demo")
        self.run_dir = run_dir
        self.switch_mode("dashboard")

    def action_stop_run(self) -> None:
        """Ask, then send the pipeline SIGINT: it checkpoints and keeps finished work."""
        if not self.is_running():
            self.notify("No pipeline is running for this run.", severity="warning")
            return
        run_dir = self.run_dir

        def stop(confirmed: bool | None) -> None:
            if confirmed and run_dir is not None:
                if self.starter.stop(run_dir):
                    self.notify("Stopping after the current step; finished work is kept.", title="Cancel")
                else:
                    self.notify("The pipeline had already ended.", severity="warning")

        self.push_screen(
            ConfirmScreen(f"Cancel {run_dir.name}? It stops after the current step and keeps finished work; "
                          "resume later with r.", yes="Cancel run", no="Keep running"),
            stop,
        )

    def action_resume_run(self) -> None:
        """Start the pipeline again on the current run folder; it redoes nothing finished."""
        if self.run_dir is None:
            self.notify("Open a run first (F1).", severity="warning")
            return
        if self.is_running():
            dashboard = self.get_screen("dashboard", DashboardScreen)
            if dashboard.is_mounted and dashboard.state.paused is not None:  # waiting on a low battery
                (self.run_dir / CONTINUE_FILE).write_text("")
                self.notify("Going on while on battery.", title="Run")
                return
            self.notify("This run is already running.", severity="warning")
            return
        info = read_run(self.run_dir)
        if info.problem:
            self.show_error("Cannot resume", info.problem)
            return
        try:
            # A demo run folder has no config until the demo command writes it.
            self.starter.start(self.run_dir, demo=not info.config)
        except (DistillError, OSError) as error:
            self.show_error("Cannot resume", str(error))
            return
        self._crash_reported = False
        self.notify(f"{self.run_dir.name} resumed", title="Run")

    # ---- chat ----

    def chat_student(self) -> StudentSource | None:
        """The current run's student: exported, or its best checkpoint while it trains."""
        return student_source(self.run_dir) if self.run_dir is not None else None

    def chat_teacher(self) -> tuple[str | None, str]:
        """(teacher to ask, "") when the run's teacher can be asked, else (None, why not)."""
        if self.run_dir is None:
            return None, "no run open"
        try:
            teacher = teacher_of(read_run_config(self.run_dir))
        except DistillError as error:
            return None, str(error)
        if not teacher:
            return None, "this run has no teacher"
        if not is_downloaded(teacher):
            return None, f"teacher {teacher} is not on this machine"
        need = _model_bytes(teacher, self.model_choices)
        available = self.available_memory()
        if need is not None and need > available:
            return None, (f"teacher {teacher} needs {format_bytes(need)}, "
                          f"{format_bytes(available)} available")
        return teacher, ""

    def ask(self, question: str, student: StudentSource, *, explain: bool = False,
            teacher: str | None = None) -> int:
        """Queue a question on the engine thread; returns the request id its events carry."""
        return self._engine().submit(ChatRequest(question=question, student=student.model,
                                              student_weights=student.weights, explain=explain, teacher=teacher))

    def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        lab = self.get_screen("lab", PromptLabScreen)
        if isinstance(event, (JobDone, JobFailed)) and event.name == LAB_JOB:
            if lab.is_mounted:
                lab.show_result(event.result if isinstance(event, JobDone) else None, _trial_message(event))
            if isinstance(event, JobFailed):
                self.notify(event.error, title="Prompt lab", severity="error", timeout=10)
            return
        if lab.is_mounted and lab.running:
            lab.show_progress(event)
            return
        chat = self.get_screen("chat", ChatScreen)
        if chat.is_mounted:
            chat.show_engine_event(event)

    def _engine(self) -> Engine:
        if self.engine is None or not self.engine.alive:
            self.engine = Engine(lambda event: self.post_message(EngineEvent(event)), self.chat_backend)
        return self.engine

    def stop_engine_work(self) -> None:
        """Stop what the engine is doing now (a chat answer or a trial); finished work is kept."""
        if self.engine is not None:
            self.engine.cancel()

    # ---- the prompt lab ----

    def _lab_config(self):
        """The current run's config and its prompt-lab folder, or a one-line reason why not."""
        if self.run_dir is None:
            return None, None, "no run open: pick one on the Runs screen (F1) or start one (F2)"
        try:
            config = parse_config(read_run_config(self.run_dir), source=str(self.run_dir / "config.toml"),
                                  base_dir=self.run_dir)
        except DistillError as error:
            return None, None, str(error)
        if not config.teacher.enabled:
            return None, None, f"{self.run_dir.name} has no teacher stage (teacher.enabled = false)"
        return config, lab_dir_for(config, self.run_dir), ""

    def prompt_lab_view(self) -> LabView:
        config, lab, problem = self._lab_config()
        if problem:
            return LabView(problem=problem)
        try:
            text = current_prompt_text(config, _task_data(config).train)
        except DistillError as error:
            return LabView(problem=str(error))
        if config.teacher.prompt_file:
            source = Path(config.teacher.prompt_file).name
        elif config.task.name in BUILTIN_TASKS:
            source = "built-in prompt"
        else:
            # The generic prompt has no worked exemplars: one separator only.
            source = "prompt from the training rows" if text.count("\n---\n") > 1 else "generic prompt"
        teacher = config.teacher.model.rstrip("/").rsplit("/", 1)[-1]
        return LabView(run_name=self.run_dir.name, prompt_text=text, trials=read_trials(lab),
                       summary=f"teacher {teacher}, {source}, {config.task.name} validation questions")

    def prompt_lab_examples(self, trial: Trial) -> list[TrialExample]:
        _, lab, problem = self._lab_config()
        return [] if problem else trial_examples(lab, trial)

    def try_prompt(self, prompt_text: str, n: int = 24, seed: int = 0) -> bool:
        """Queue a trial of ``prompt_text`` on the engine thread; False (and why) when it cannot run."""
        config, _, problem = self._lab_config()
        if not problem:
            try:
                parse_prompt_text(prompt_text, "the prompt")
            except DistillError as error:
                problem = str(error)
        if problem:
            self.notify(problem, title="Prompt lab", severity="warning", timeout=8)
            return False
        run_dir = self.run_dir

        def work(on_event, should_stop) -> Trial:
            trial, _ = try_prompt(config, _task_data(config), n=n, seed=seed, prompt_text=prompt_text,
                                  label="edited prompt", run_dir=run_dir, on_event=on_event, should_stop=should_stop)
            return trial

        self._engine().submit(Job(LAB_JOB, work))
        return True

    def use_prompt(self, prompt_text: str) -> bool:
        """Write ``prompt_text`` into the current run's config (only before its teacher stage)."""
        config, lab, problem = self._lab_config()
        if not problem:
            state = stage_states(read_state(self.run_dir)).get("teacher")
            if state in ("done", "running") or self.is_running():
                problem = (f"{self.run_dir.name}'s teacher stage has {'run' if state == 'done' else 'started'}; "
                           "a new prompt applies to a new run, or to this one with `mlx-distill run --redo teacher`")
        if not problem:
            try:
                path = save_prompt(lab, prompt_text)
                adopt_prompt(self.run_dir / "config.toml", path)
            except DistillError as error:
                problem = str(error)
        if problem:
            self.notify(problem, title="Prompt lab", severity="warning", timeout=10)
            return False
        self.notify(f"{self.run_dir.name} will use prompt {path.stem}", title="Prompt lab")
        return True

    # ---- export and push (their own processes: MLX and the network stay out of the UI) ----

    def run_share_command(self, argv: list[str]) -> None:
        """Run ``mlx-distill export|push ARGS`` as a process; its result comes back as a notification."""
        self.notify(f"{argv[0]} of {Path(argv[1]).name} started", title=argv[0].capitalize())
        self._share_worker(argv)

    @work(thread=True, exit_on_error=False, group="share")
    def _share_worker(self, argv: list[str]) -> None:
        done = subprocess.run([sys.executable, "-m", "mlx_distill", *argv], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        output = (done.stdout if done.returncode == 0 else done.stderr).strip().splitlines()
        message = "\n".join(output[-12:]) or f"exit status {done.returncode}"
        self.call_from_thread(self.notify, message, title=f"{argv[0].capitalize()} of {Path(argv[1]).name}",
                              severity="information" if done.returncode == 0 else "error", timeout=20)

    # ---- everything else ----

    def show_error(self, title: str, message: str) -> None:
        self.notify(message, title=title, severity="error", timeout=10)
        self.push_screen(MessageScreen(title, message))

    def action_toggle_dark(self) -> None:
        self.theme = LIGHT_THEME if self.current_theme.dark else DARK_THEME

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New run", "Pick a task, teacher and student, then start", lambda: self.switch_mode("new"))
        yield SystemCommand("Start demo run", "The offline demo: tiny models, every stage for real", self.action_start_demo)
        yield SystemCommand("Cancel run", "Stop the current run safely (finished work is kept)", self.action_stop_run)
        yield SystemCommand("Resume run", "Continue the current run where it stopped", self.action_resume_run)
        yield SystemCommand("Runs", "Browse past runs", lambda: self.switch_mode("runs"))
        yield SystemCommand("Dashboard", "Watch the current run", lambda: self.switch_mode("dashboard"))
        yield SystemCommand("Chat with student", "Ask the current run's student", lambda: self.switch_mode("chat"))
        yield SystemCommand("Prompt lab", "Try the teacher's prompt on a few questions before the full stage",
                            lambda: self.switch_mode("lab"))
        if isinstance(screen, RunsScreen):
            yield SystemCommand("Export…", "Export the selected run's student, optionally quantized (e)",
                                lambda: screen.action_share("export"))
            yield SystemCommand("Push…", "Push the selected run's student to the Hugging Face hub (p)",
                                lambda: screen.action_share("push"))
        yield SystemCommand("Toggle light/dark", "Switch between the light and dark theme", self.action_toggle_dark)


LAB_JOB = "prompt-lab trial"


_TASK_DATA: dict[str, Any] = {}


def _task_data(config: Any) -> Any:
    """The run's task data, read once per task settings (the lab shows it again and again)."""
    key = repr(dataclasses.asdict(config.task))
    if key not in _TASK_DATA:
        task = config.task
        _TASK_DATA.clear()  # one task at a time: a large data set is not kept twice
        _TASK_DATA[key] = load_task(task.name, task.data, seed=task.seed,
                                    validation_fraction=task.validation_fraction, subsample=task.subsample,
                                    columns=task.columns or None, human_rationales=task.human_rationales or None)
    return _TASK_DATA[key]


@dataclass(frozen=True)
class LabView:
    """What the prompt lab shows for the current run (``problem`` when it cannot be used)."""

    problem: str = ""
    run_name: str = ""
    summary: str = ""
    prompt_text: str = ""
    trials: list[Trial] = field(default_factory=list)


def _trial_message(event: JobDone | JobFailed) -> str:
    if isinstance(event, JobFailed):
        return f"failed: {event.error}"
    trial = event.result
    return f"{trial.accepted}/{trial.questions} accepted ({trial.accept_rate:.0%}), prompt {trial.prompt_hash}"


def _model_bytes(name: str, choices: Iterable[ModelChoice]) -> int | None:
    """Memory a model needs: from the catalog, else from a local folder's weight files."""
    choice = find_choice(choices, name)
    if choice is not None and choice.memory_bytes:
        return choice.memory_bytes
    folder = Path(name).expanduser()
    if folder.is_dir():
        size = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
        return int(size * MEMORY_OVERHEAD) if size else None
    return None
