"""The New run form: task and data, teacher and student pickers, method, α, data fraction."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static
from textual.worker import get_current_worker

from mlx_distill.errors import DistillError
from mlx_distill.data import TASKS
from mlx_distill.methods import DEFAULT_METHOD, METHODS
from mlx_distill.tui.run_form import RunForm, build_config, check_config, check_form, data_hint


def _row(label: str, *widgets, row_id: str | None = None) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"), *widgets, classes="field", id=row_id)


class NewRunScreen(Screen):
    """Collects a RunForm, checks it (data parsed in a worker thread) and asks the app to start."""

    BINDINGS = [Binding("ctrl+s", "start", "Start"), Binding("ctrl+d", "app.start_demo", "Demo")]

    def compose(self) -> ComposeResult:
        choices = self.app.model_choices
        teachers = [(choice.label, choice.name) for choice in choices if choice.role == "teacher"]
        students = [(choice.label, choice.name) for choice in choices if choice.role == "student"]
        yield Header(show_clock=False)
        with VerticalScroll(id="form"):
            yield _row(
                "Task",
                Select([(t, t) for t in TASKS], value="svamp", allow_blank=False, id="task"),
                Input(placeholder="data: empty, a hub id or a file/folder", id="data-path"),
            )
            yield _row("", Static(self._hint("svamp"), id="data-hint"))
            yield _row("Teacher", Select(teachers, prompt="catalog teacher", id="teacher-select"))
            yield _row("", Input(placeholder="…or a hub id / local folder", id="teacher-input"))
            yield _row("Student", Select(students, prompt="catalog student", id="student-select"))
            yield _row("", Input(placeholder="…or a hub id / local folder", id="student-input"))
            yield _row(
                "Method",
                Select([(m, m) for m in METHODS], value=DEFAULT_METHOD, allow_blank=False, id="method"),
                Label("α", classes="field-label -inline"),
                Input("0.5", id="alpha", restrict=r"[0-9.]*", tooltip="weight of the label loss; 1 − α goes to the rationale"),
                Label("data", classes="field-label -inline"),
                Input("1.0", id="fraction", restrict=r"[0-9.]*", tooltip="fraction of the training data to use"),
            )
            yield _row("Run name", Input(placeholder="default: task and time", id="run-name"))
            yield Static("", id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Start run", variant="success", id="start")
                yield Button("Offline demo", id="demo")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#form").border_title = "New run"

    @staticmethod
    def _hint(task: str) -> str:
        return f"[dim]{escape(data_hint(task))}[/]"

    @on(Select.Changed, "#task")
    def show_data_hint(self, event: Select.Changed) -> None:
        if event.value in TASKS:
            self.query_one("#data-hint", Static).update(self._hint(str(event.value)))

    def form(self) -> RunForm:
        def text(selector: str) -> str:
            return self.query_one(selector, Input).value.strip()

        def picked(select_id: str, input_id: str) -> str:
            typed = text(input_id)
            value = self.query_one(select_id, Select).value
            return typed or ("" if value is Select.NULL else str(value))

        return RunForm(
            task=str(self.query_one("#task", Select).value),
            data_path=text("#data-path"),
            teacher=picked("#teacher-select", "#teacher-input"),
            student=picked("#student-select", "#student-input"),
            method=str(self.query_one("#method", Select).value),
            alpha=text("#alpha"),
            fraction=text("#fraction"),
            name=text("#run-name"),
        )

    def show_problems(self, problems: list[str]) -> None:
        error = self.query_one("#form-error", Static)
        error.update("\n".join(f"• {problem}" for problem in problems))
        error.set_class(bool(problems), "-shown")

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        form = self.form()
        problems = check_form(form, self.app.model_choices)
        self.show_problems(problems)
        if problems:
            self.notify(problems[0], title="Cannot start", severity="error")
            return
        self.query_one("#start", Button).disabled = True
        self.show_problems([])
        self.query_one("#form-error", Static).update("checking the task data…")
        self.check_and_start(form)

    @on(Button.Pressed, "#demo")
    def start_demo(self) -> None:
        self.app.action_start_demo()

    @work(thread=True, group="check-data", exclusive=True, exit_on_error=False)
    def check_and_start(self, form: RunForm) -> None:
        """Check the config and parse the data off the UI thread (large files take a while)."""
        try:
            config = build_config(form, self.app.runs_dir)
            summary, problem = check_config(config), ""
        except DistillError as error:
            config, summary, problem = {}, "", str(error)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._checked, config, problem, summary)

    def _checked(self, config: dict, problem: str, summary: str) -> None:
        self.query_one("#start", Button).disabled = False
        if problem:
            self.show_problems([problem])
            self.notify(problem, title="Cannot start", severity="error")
            return
        self.query_one("#form-error", Static).update("")
        self.app.start_run(config, summary)
