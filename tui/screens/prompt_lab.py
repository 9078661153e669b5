"""The prompt lab: edit the teacher's prompt, try it on a few validation questions, compare trials,
and use the best one for the run before its teacher stage starts.

The trial itself runs on the app's engine thread (``DistillApp.try_prompt``); this screen only
shows what it reports: progress while it runs, then the trial in the table and its examples.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, ProgressBar, Static, TabbedContent, TabPane, TextArea

from mlx_distill.events import Event, TeacherProgress
from mlx_distill.prompt_lab import Trial
from mlx_distill.tui.state import printable

TRIAL_COLUMNS = ("Prompt", "Trial", "Accepted", "Parse fail", "Restating", "s/answer")
EXAMPLES_SHOWN = 8


class PromptLabScreen(Screen):
    """F5: the current run's teacher prompt, its trials and their examples."""

    # Priority: the editor has the focus most of the time and would take these keys.
    BINDINGS = [
        Binding("ctrl+r", "try_prompt", "Try", priority=True),
        Binding("ctrl+x", "stop_trial", "Stop", priority=True),
        Binding("ctrl+u", "use_prompt", "Use prompt", priority=True),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.trials: list[Trial] = []
        self.running = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="lab-title")
        with TabbedContent(id="lab-tabs"):
            with TabPane("Prompt", id="lab-prompt-tab"):
                yield TextArea("", id="lab-prompt", soft_wrap=True, show_line_numbers=False)
            with TabPane("Trials", id="lab-trials-tab"):
                yield DataTable(id="lab-trials", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="lab-examples"):
                    yield Static("", id="lab-examples-text")
        with Horizontal(id="lab-actions"):
            yield Button("Try", id="lab-try", variant="primary")
            yield Button("Stop", id="lab-stop", disabled=True)
            yield Button("Use this prompt", id="lab-use")
            with Vertical(id="lab-progress-box"):
                yield ProgressBar(id="lab-progress", show_eta=False)
                yield Static("", id="lab-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#lab-trials", DataTable).add_columns(*TRIAL_COLUMNS)
        self.load_run()

    def on_screen_resume(self) -> None:
        if self.is_mounted and not self.running:
            self.load_run()

    # ---- what is shown ----

    def load_run(self) -> None:
        """Show the current run's prompt (its config's, or the built-in one) and its past trials."""
        title = self.query_one("#lab-title", Static)
        prompt = self.query_one("#lab-prompt", TextArea)
        lab = self.app.prompt_lab_view()
        if lab.problem:
            title.update(lab.problem)
            prompt.load_text("")
            self._show_trials([])
            return
        title.update(f"{lab.run_name}: {lab.summary}")
        if prompt.text != lab.prompt_text:
            prompt.load_text(lab.prompt_text)
        self._show_trials(lab.trials)

    def _show_trials(self, trials: list[Trial]) -> None:
        self.trials = trials
        table = self.query_one("#lab-trials", DataTable)
        table.clear()
        timing = getattr(self.app, "show_timing", True)
        for trial in trials:
            table.add_row(trial.prompt_hash[:8], printable(trial.label)[:18],
                          f"{trial.accepted}/{trial.questions} {trial.accept_rate:.0%}",
                          str(trial.parse_failures), str(trial.restating),
                          f"{trial.seconds_per_answer:.2f}" if timing else "—")
        if trials:
            table.move_cursor(row=len(trials) - 1)
            self._show_examples(len(trials) - 1)
        else:
            self.query_one("#lab-examples-text", Static).update("No trials yet: edit the prompt, then Try (ctrl+r).")

    def _show_examples(self, index: int) -> None:
        if not 0 <= index < len(self.trials):
            return
        trial = self.trials[index]
        examples = self.app.prompt_lab_examples(trial)
        lines = [f"{trial.label} — prompt {trial.prompt_hash}: {trial.accepted} accepted of {trial.questions}"]
        for example in examples[:EXAMPLES_SHOWN]:
            mark = "✓" if example.accepted else "✗"
            why = "" if example.accepted else f" ({example.rejected_because or 'rejected'})"
            lines.append(f"\n{mark} {printable(example.question)}\n  teacher: {printable(example.rationale)} "
                         f"→ {printable(example.answer) or '-'}{why}\n  gold: {printable(example.gold)}")
        self.query_one("#lab-examples-text", Static).update("\n".join(lines))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_examples(event.cursor_row)

    # ---- progress of a running trial ----

    def set_running(self, running: bool, status: str = "") -> None:
        self.running = running
        self.query_one("#lab-try", Button).disabled = running
        self.query_one("#lab-stop", Button).disabled = not running
        self.query_one("#lab-status", Static).update(status)
        if running:
            self.query_one("#lab-progress", ProgressBar).update(total=None, progress=0)

    def show_progress(self, event: Event) -> None:
        if isinstance(event, TeacherProgress):
            self.query_one("#lab-progress", ProgressBar).update(total=event.total, progress=event.done)
            self.query_one("#lab-status", Static).update(
                f"{event.done}/{event.total} answered, {event.accepted} accepted")

    def show_result(self, trial: Trial | None, message: str) -> None:
        self.set_running(False, message)
        if trial is not None:  # the editor keeps the text that was tried
            self._show_trials(self.app.prompt_lab_view().trials)
            self.query_one("#lab-tabs", TabbedContent).active = "lab-trials-tab"

    # ---- actions ----

    def action_try_prompt(self) -> None:
        if not self.running:
            text = self.query_one("#lab-prompt", TextArea).text
            if self.app.try_prompt(text):
                self.set_running(True, "trying the prompt on the teacher…")

    def action_stop_trial(self) -> None:
        if self.running:
            self.app.stop_engine_work()
            self.query_one("#lab-status", Static).update("stopping after the current batch…")

    def action_use_prompt(self) -> None:
        self.app.use_prompt(self.query_one("#lab-prompt", TextArea).text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"lab-try": self.action_try_prompt, "lab-stop": self.action_stop_trial,
                   "lab-use": self.action_use_prompt}
        action = actions.get(event.button.id or "")
        if action is not None:
            action()
