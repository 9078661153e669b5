"""The runs browser: every run folder with task, models, accuracy, status and date."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from mlx_distill.pipeline import RunInfo, list_runs

COLUMNS = ("Run", "Task", "Accuracy", "Status", "Date", "Teacher", "Student", "Method")
MAX_NAME = 22


def clip(text: str, width: int = MAX_NAME) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def short_model(name: str) -> str:
    """The last part of a hub id or path, which is what tells models apart."""
    return clip(name.rstrip("/").rsplit("/", 1)[-1]) if name else "—"


class RunsScreen(Screen):
    """Lists ``app.runs_dir``; enter opens the dashboard (a replay when finished), c the chat."""

    BINDINGS = [
        Binding("enter", "open_dashboard", "Dashboard"),
        Binding("c", "open_chat", "Chat"),
        Binding("n", "app.switch_mode('new')", "New run"),
        Binding("d", "app.start_demo", "Demo run"),
        Binding("g", "refresh_runs", "Refresh", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs: list[RunInfo] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-empty")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.refresh_runs()
        self.set_interval(3.0, self.refresh_runs)

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.refresh_runs()

    def refresh_runs(self) -> None:
        runs = list_runs(self.app.runs_dir)
        rows = [self._row(run) for run in runs]
        self.query_one("#runs-title", Static).update(f"Runs in {self.app.runs_dir}")
        empty = self.query_one("#runs-empty", Static)
        empty.display = not rows
        empty.update("No runs yet. Press [b]n[/b] for a new run or [b]d[/b] for the offline demo.")
        table = self.query_one(DataTable)
        if rows == [self._row(run) for run in self.runs] and table.row_count == len(rows):
            return
        cursor = table.cursor_row
        self.runs = runs
        table.clear()
        for run, row in zip(runs, rows):
            table.add_row(*row, key=str(run.path))
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))

    def action_refresh_runs(self) -> None:
        self.refresh_runs()

    @staticmethod
    def _row(run: RunInfo) -> tuple[str, ...]:
        if run.problem:
            status = "newer version" if "newer" in run.problem else "unreadable"
            return (clip(run.name), "—", "—", status, run.date_text, "—", "—", "—")
        return (
            clip(run.name),
            run.task or "—",
            run.accuracy_text,
            run.status,
            run.date_text,
            short_model(run.teacher),
            short_model(run.student),
            run.method or "—",
        )

    def selected(self) -> RunInfo | None:
        table = self.query_one(DataTable)
        if not self.runs or table.cursor_row < 0 or table.cursor_row >= len(self.runs):
            return None
        return self.runs[table.cursor_row]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_dashboard()

    def action_open_dashboard(self) -> None:
        run = self.selected()
        if run is not None:
            self.app.open_run(run.path, "dashboard")

    def action_open_chat(self) -> None:
        run = self.selected()
        if run is not None:
            self.app.open_run(run.path, "chat")
