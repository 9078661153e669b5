"""The run dashboard: stages, teacher and training progress, live plots, memory, log."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Header, Log, ProgressBar, Static
from textual_plotext import PlotextPlot

from mlx_distill.events import STAGES, Event
from mlx_distill.tui.state import STAGE_ICONS, DashboardState, printable

# Theme variables, so light and dark themes both work.
STAGE_COLOURS = {
    "pending": "$text-muted",
    "running": "$warning",
    "done": "$success",
    "skipped": "$success",
    "failed": "$error",
    "stopped": "$warning",
}

# Draw at most this many points per series; longer runs are thinned evenly.
MAX_PLOT_POINTS = 400


def _thin(xs: list, ys: list) -> tuple[list, list]:
    if len(xs) <= MAX_PLOT_POINTS:
        return xs, ys
    stride = -(-len(xs) // MAX_PLOT_POINTS)
    return xs[::stride] + xs[-1:], ys[::stride] + ys[-1:]


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(printable(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mark(state: DashboardState, name: str) -> str:
    return "✓ " if name == state.chosen else ""


class StageList(Static):
    """One line: every stage with an icon for its state."""

    def show(self, state: DashboardState) -> None:
        parts = []
        for name in STAGES:
            stage_state = state.shown_stages.get(name, "pending")
            colour = STAGE_COLOURS.get(stage_state, "$text")
            parts.append(f"[{colour}]{STAGE_ICONS.get(stage_state, '?')} {name}[/]")
        self.update("  ".join(parts))


class DashboardScreen(Screen):
    """Follows the app's current run; ``show_events`` is fed by the app as events arrive."""

    BINDINGS = [
        Binding("x", "app.stop_run", "Cancel"),
        Binding("r", "app.resume_run", "Resume"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.state = DashboardState()

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="status-row"):
            yield StageList(id="stages")
            yield Static("", id="run-status")
        yield Static("memory: —", id="memory")
        with Horizontal(id="panels"):
            with Vertical(id="teacher-panel", classes="panel"):
                yield ProgressBar(id="teacher-bar", show_eta=False)
                yield Static("", id="teacher-stats")
                yield Static("", id="latest")
            with Vertical(id="train-panel", classes="panel"):
                yield ProgressBar(id="train-bar", show_eta=False)
                yield Static("", id="train-stats")
                yield Static("", id="accuracy")
        with Horizontal(id="plots"):
            yield PlotextPlot(id="loss-plot")
            yield PlotextPlot(id="acc-plot")
        yield Log(id="log", max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#teacher-panel").border_title = "Teacher"
        self.query_one("#train-panel").border_title = "Training"
        self.query_one("#log").border_title = "Log"
        loss = self.query_one("#loss-plot", PlotextPlot).plt
        loss.title("Loss by step")
        accuracy = self.query_one("#acc-plot", PlotextPlot).plt
        accuracy.title("Validation accuracy by step")
        self.reset(self.app.history if hasattr(self.app, "history") else [])

    def reset(self, events: list[Event]) -> None:
        """Forget the shown run and redraw from ``events`` (a replay)."""
        self.state = DashboardState()
        self.query_one("#log", Log).clear()
        self.show_events(events)

    def show_events(self, events: list[Event]) -> None:
        """Fold new events in and redraw once."""
        lines: list[str] = []
        for event in events:
            lines += self.state.apply(event)
        if lines:
            self.query_one("#log", Log).write_lines(lines)
        self.redraw()

    def redraw(self) -> None:
        state = self.state
        state.pipeline_alive = getattr(self.app, "pipeline_alive", True)
        show_eta = getattr(self.app, "show_timing", True)
        self.query_one("#stages", StageList).show(state)
        status = self.query_one("#run-status", Static)
        status.update(state.status)
        status.set_class(state.failed is not None, "-failed")
        self.query_one("#memory", Static).update(state.memory_text())

        teacher = state.teacher
        self._fill_bar("#teacher-bar", (teacher.done, teacher.total) if teacher else None, state.shown_stages.get("teacher"))
        self.query_one("#teacher-stats", Static).update(state.teacher_text(show_eta))
        latest = self.query_one("#latest", Static)
        shown = state.latest_text()
        if shown is None:
            latest.update("")
        else:
            question, rationale, accepted = shown
            verdict = "[$success]✓ accepted[/]" if accepted else "[$error]✗ rejected[/]"
            latest.update(f"{verdict} [b]Q:[/b] {escape(_clip(question))}\n[b]A:[/b] {escape(_clip(rationale))}")

        step = state.train
        self._fill_bar("#train-bar", (step.step, step.total_steps) if step else None, state.shown_stages.get("train"))
        train_stats = self.query_one("#train-stats", Static)
        text = state.train_text(show_eta)
        train_stats.update(text)
        train_stats.display = bool(text)
        self.query_one("#accuracy", Static).update(state.accuracy_text())
        several = len(state.candidates) > 1
        self.query_one("#train-panel").border_subtitle = state.CANDIDATE_COLUMNS if several else ""
        self._plot()

    def _fill_bar(self, selector: str, progress: tuple[int, int] | None, stage_state: str | None) -> None:
        """Show (done, total) on a bar; a stage finished before we saw its progress shows full."""
        bar = self.query_one(selector, ProgressBar)
        if progress is not None:
            bar.update(total=max(progress[1], 1), progress=progress[0])
        elif stage_state in ("done", "skipped"):
            bar.update(total=1, progress=1)

    def _plot(self) -> None:
        state = self.state
        loss_plot = self.query_one("#loss-plot", PlotextPlot)
        plt = loss_plot.plt
        plt.clear_data()
        several = len(state.candidates) > 1
        # One line per candidate (its label loss: comparable across methods); a lone run also
        # draws its rationale loss.
        for candidate in state.candidates.values():
            if candidate.steps:
                label = f"{_mark(state, candidate.name)}{candidate.label}" if several else "label"
                plt.plot(*_thin(candidate.steps, candidate.label_losses), label=label)
            if candidate.rationale_steps and not several:
                plt.plot(*_thin(candidate.rationale_steps, candidate.rationale_losses), label="rationale")
        loss_plot.refresh()
        acc_plot = self.query_one("#acc-plot", PlotextPlot)
        plt = acc_plot.plt
        plt.clear_data()
        for candidate in state.candidates.values():
            if candidate.eval_steps:
                label = f"{_mark(state, candidate.name)}{candidate.label}" if several else "validation %"
                plt.plot(candidate.eval_steps, [a * 100 for a in candidate.eval_accuracies], label=label, marker="dot")
                plt.ylim(0, 100)
        acc_plot.refresh()
