"""Chat with a run's student (and its teacher side by side); answers stream in from the engine.

Answers are shown as plain text, not Markdown: student outputs are equations such as
``(5 * 3) - 2`` that Markdown would turn into emphasis.
"""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Static, Switch

from mlx_distill.pipeline import exported_student
from mlx_distill.serve import serve_command, server_address
from mlx_distill.tui.chat_history import append_chat, read_chat
from mlx_distill.tui.engine import ANSWER, RATIONALE, TEACHER, ChatDone, ChatFailed, ChatToken, ModelLoading
from mlx_distill.events import Event
from mlx_distill.tui.state import printable


class Prompt(Static):
    """The user's question."""


class Reply(Vertical):
    """One model's answer (and, for the student, its own rationale)."""

    def __init__(self, who: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.who = who
        self.texts = {ANSWER: "", RATIONALE: ""}

    def compose(self) -> ComposeResult:
        yield Static("…", classes="answer", markup=False)
        yield Static("", classes="rationale", markup=False)

    def on_mount(self) -> None:
        self.border_title = self.who

    def add(self, part: str, text: str) -> None:
        key = RATIONALE if part == RATIONALE else ANSWER
        self.texts[key] += text
        self.show(key)

    def set_text(self, part: str, text: str) -> None:
        key = RATIONALE if part == RATIONALE else ANSWER
        self.texts[key] = text
        self.show(key)

    def show(self, key: str) -> None:
        if key == ANSWER:
            self.query_one(".answer", Static).update(printable(self.texts[ANSWER]).strip() or "…")
        else:
            text = printable(self.texts[RATIONALE]).strip()
            self.query_one(".rationale", Static).update(f"explain: {text}" if text else "")

    def set_latency(self, seconds: float | None, note: str = "") -> None:
        if seconds is not None and not getattr(self.app, "show_timing", True):
            note = "done"
        self.border_subtitle = note or (f"{seconds:.2f} s" if seconds is not None else "")


class ServeLine(Static):
    """How other apps reach this run's student: its serve command, or the live server's address."""

    DEFAULT_CSS = "ServeLine { height: 1; padding: 0 2; color: $text-muted; }"

    def show_run(self, run_dir: Path | None) -> None:
        student = exported_student(run_dir) if run_dir is not None else None
        self.display = student is not None
        if student is not None:
            url = server_address(run_dir)
            self.update(f"OpenAI API: serving at {url}/v1" if url else f"other apps: {serve_command(run_dir)}")


class Exchange(Vertical):
    """A question and the replies to it."""

    def __init__(self, question: str, teacher: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.question = question
        self.with_teacher = teacher

    def compose(self) -> ComposeResult:
        yield Prompt(self.question, markup=False)
        with Horizontal(classes="replies"):
            yield Reply("student", classes="student")
            if self.with_teacher:
                yield Reply("teacher", classes="teacher")

    def reply(self, part: str) -> Reply:
        return self.query_one(".teacher" if part == TEACHER else ".student", Reply)


class ChatScreen(Screen):
    """Ask the app's current run's student; history is kept in the run folder's chat.jsonl."""

    AUTO_FOCUS = "#chat-input"
    BINDINGS = [
        Binding("ctrl+r", "toggle_explain", "Explain"),
        Binding("ctrl+b", "toggle_teacher", "Teacher too"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pending: dict[int, dict] = {}  # request id -> the record being built
        self.exchanges: dict[int, Exchange] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="chat-bar"):
            yield Static("", id="chat-model", markup=False)
            yield Label("explain", classes="switch-label")
            yield Switch(id="explain-switch")
            yield Label("teacher", classes="switch-label")
            yield Switch(id="teacher-switch")
        yield ServeLine("", id="chat-serve", markup=False)
        yield VerticalScroll(id="chat-view")
        yield Input(placeholder="Ask the student a question from its task…", id="chat-input")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#chat-view", VerticalScroll).anchor()
        self.load_run()
        self.set_interval(3.0, lambda: self.query_one(ServeLine).show_run(self.app.run_dir))

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.update_bar()

    # ---- the run being talked to ----

    def load_run(self) -> None:
        """Show the current run's model and its chat history."""
        view = self.query_one("#chat-view", VerticalScroll)
        view.remove_children()
        self.pending.clear()
        self.exchanges.clear()
        self.update_bar()
        run_dir = self.app.run_dir
        if run_dir is None:
            return
        for record in read_chat(run_dir)[-50:]:
            exchange = Exchange(record.get("question", ""), teacher="teacher" in record)
            view.mount(exchange)
            exchange.call_after_refresh(self._fill, exchange, record)

    @staticmethod
    def _fill(exchange: Exchange, record: dict) -> None:
        seconds = record.get("seconds", {})
        student = exchange.reply(ANSWER)
        student.set_text(ANSWER, record.get("answer", ""))
        student.set_text(RATIONALE, record.get("rationale", ""))
        student.set_latency(seconds.get(ANSWER))
        if "teacher" in record:
            teacher = exchange.reply(TEACHER)
            teacher.set_text(TEACHER, record.get("teacher", ""))
            teacher.set_latency(seconds.get(TEACHER))

    def update_bar(self) -> None:
        source = self.app.chat_student()
        teacher, why_not = self.app.chat_teacher()
        run_dir = self.app.run_dir
        if source is None:
            label = "no trained student in this run yet"
        else:
            shown = source.shown.resolve()
            if run_dir is not None and shown.is_relative_to(run_dir.resolve().parent):
                shown = shown.relative_to(run_dir.resolve().parent)
            label = f"student: {shown}" + (" (checkpoint)" if source.weights else "")
        self.query_one("#chat-model", Static).update(label)
        self.query_one(ServeLine).show_run(run_dir)
        switch = self.query_one("#teacher-switch", Switch)
        switch.disabled = teacher is None
        switch.tooltip = why_not or f"also ask {teacher}"
        if teacher is None:
            switch.value = False

    # ---- toggles ----

    @on(Switch.Changed, "#explain-switch")
    def explain_changed(self, event: Switch.Changed) -> None:
        self.set_class(event.value, "-explain")

    def action_toggle_explain(self) -> None:
        switch = self.query_one("#explain-switch", Switch)
        switch.value = not switch.value

    def action_toggle_teacher(self) -> None:
        switch = self.query_one("#teacher-switch", Switch)
        if switch.disabled:
            self.notify(switch.tooltip or "no teacher to ask", severity="warning")
            return
        switch.value = not switch.value

    # ---- asking ----

    @on(Input.Submitted, "#chat-input")
    async def ask(self, event: Input.Submitted) -> None:
        question = event.value.strip()
        if not question:
            return
        student = self.app.chat_student()
        if student is None:
            self.notify("This run has no trained student yet; wait for the first checkpoint.", severity="warning")
            return
        event.input.clear()
        explain = self.query_one("#explain-switch", Switch).value
        teacher = self.app.chat_teacher()[0] if self.query_one("#teacher-switch", Switch).value else None
        exchange = Exchange(question, teacher=teacher is not None)
        # Mounted before the engine can answer, so no token arrives before its reply exists.
        await self.query_one("#chat-view", VerticalScroll).mount(exchange)
        request_id = self.app.ask(question, student, explain=explain, teacher=teacher)
        self.exchanges[request_id] = exchange
        parts = {ANSWER} | ({RATIONALE} if explain else set()) | ({TEACHER} if teacher else set())
        self.pending[request_id] = {
            "question": question,
            "student": str(student.shown),
            **({"teacher_model": teacher} if teacher else {}),
            "parts": parts,
            "seconds": {},
        }

    def show_engine_event(self, event: Event) -> None:
        """Route a ModelLoading/ChatToken/ChatDone/ChatFailed event to its reply."""
        exchange = self.exchanges.get(getattr(event, "request_id", -1))
        if exchange is None or not exchange.is_mounted:
            return
        reply = exchange.reply(event.part)
        if isinstance(event, ModelLoading):
            reply.set_latency(None, "loading…")
        elif isinstance(event, ChatToken):
            reply.add(event.part, event.text)
        elif isinstance(event, ChatDone):
            reply.set_text(event.part, event.text)
            if event.part != RATIONALE:
                reply.set_latency(event.seconds)
            self._part_finished(event.request_id, event.part, event.text, event.seconds)
        elif isinstance(event, ChatFailed):
            reply.set_text(event.part, f"[{event.error}]")
            reply.add_class("-failed")
            self._part_finished(event.request_id, event.part, None, None)

    def _part_finished(self, request_id: int, part: str, text: str | None, seconds: float | None) -> None:
        record = self.pending.get(request_id)
        if record is None:
            return
        record["parts"].discard(part)
        if text is not None:
            record[part] = text
            record["seconds"][part] = round(seconds or 0.0, 3)
        if not record["parts"]:
            del self.pending[request_id]
            record.pop("parts")
            run_dir = self.app.run_dir
            if run_dir is not None and ANSWER in record:
                append_chat(Path(run_dir), record)
