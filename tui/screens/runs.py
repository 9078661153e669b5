"""The runs browser: every run folder with task, models, accuracy, status and date."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Header, Input, Select, Static

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
        Binding("e", "share('export')", "Export…", show=False),
        Binding("p", "share('push')", "Push…", show=False),
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

    def action_share(self, command: str) -> None:
        """Export… / Push…: ask for the options, then run the command as its own process."""
        run = self.selected()
        if run is not None:
            self.app.push_screen(ShareScreen(command, run.path),
                                 lambda argv: self.app.run_share_command(argv) if argv else None)


def share_arguments(command: str, run: Path, *, repo_id: str = "", quantize: str = "", group_size: str = "",
                    private: bool = False, dry_run: bool = False) -> list[str]:
    """The `mlx-distill export|push` arguments for the dialog's choices ("" = the default)."""
    argv = [command, str(run)] + ([repo_id] if command == "push" else [])
    if quantize:
        argv += ["--quantize", quantize] + (["--group-size", group_size] if group_size else [])
    if command == "push":
        argv += (["--private"] if private else []) + (["--dry-run"] if dry_run else [])
    return argv + ["--quiet"]


class ShareScreen(ModalScreen[list[str] | None]):
    """The options of `mlx-distill export` or `push`; dismisses with the command's arguments."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, command: str, run: Path) -> None:
        super().__init__()
        self.command = command
        self.run = run

    def compose(self) -> ComposeResult:
        push = self.command == "push"
        with Vertical(id="dialog"):
            yield Static(f"{'Push' if push else 'Export'} the student of {self.run.name}", id="question",
                         markup=False)
            if push:
                yield Input(placeholder="NAME/REPO on the hub", id="repo-id")
            yield Select([("float (transformers loads it)", ""), ("8-bit (MLX)", "8"), ("4-bit (MLX)", "4")],
                         value="", allow_blank=False, id="quantize")
            yield Select([("group size: automatic", ""), ("group size 64", "64"), ("group size 32", "32")],
                         value="", allow_blank=False, id="group-size")
            if push:
                yield Checkbox("private repo", id="private")
                yield Checkbox("dry run: list the files, send nothing", value=True, id="dry-run")
            with Horizontal(id="dialog-buttons"):
                yield Button("Push" if push else "Export", variant="primary", id="go")
                yield Button("Cancel", id="cancel")

    def arguments(self) -> list[str] | None:
        push = self.command == "push"
        repo_id = self.query_one("#repo-id", Input).value.strip() if push else ""
        if push and not repo_id:
            self.notify("Give the hub repo as NAME/REPO.", severity="warning")
            return None
        return share_arguments(
            self.command, self.run, repo_id=repo_id, quantize=str(self.query_one("#quantize", Select).value),
            group_size=str(self.query_one("#group-size", Select).value),
            private=push and self.query_one("#private", Checkbox).value,
            dry_run=push and self.query_one("#dry-run", Checkbox).value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "go":
            self.dismiss(None)
            return
        argv = self.arguments()
        if argv is not None:
            self.dismiss(argv)

    def action_cancel(self) -> None:
        self.dismiss(None)
