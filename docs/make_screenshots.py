"""Make the README screenshots from the app itself: SVG from Textual, PNG through rsvg-convert.

    python docs/make_screenshots.py [--run runs/demo]

With ``--run`` the dashboard and chat show that real run folder (replayed; the chat asks its real
student on the engine thread); without it they show a sample run written by ``tui.fakes``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

from mlx_distill.tui.app import DistillApp
from mlx_distill.testing.ui_fakes import T0, EchoBackend, ScriptedStarter, make_run

DOCS = Path(__file__).resolve().parent


async def shoot(app: DistillApp, name: str, size: tuple[int, int], keys: list[str] = (), wait_for: str = "") -> None:
    app.animation_level = "none"
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
        for _ in range(600):
            if not wait_for or any(wait_for in str(w.render()) for w in app.screen.query(".answer")):
                break
            await pilot.pause(0.1)
        await pilot.pause()
        app.save_screenshot(filename=f"{name}.svg", path=str(DOCS))
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", "-w", str(size[0] * 14), str(DOCS / f"{name}.svg"), "-o",
                        str(DOCS / f"{name}.png")], check=True)


async def main(run: Path | None) -> None:
    samples = Path(tempfile.mkdtemp()) / "runs"
    make_run(samples, "svamp-flan-t5-small", created=T0)
    make_run(samples, "cqa-flan-t5-base", task="cqa", accuracy=0.62, created=T0 - 86400,
             student="google/flan-t5-base", teacher="mlx-community/Qwen2.5-7B-Instruct-4bit")
    make_run(samples, "svamp-finetune", method="finetune", teacher="", accuracy=0.41, created=T0 - 2 * 86400)
    real = run is not None
    run_dir = run if real else samples / "svamp-flan-t5-small"
    runs_dir = run_dir.parent if real else samples

    def app(**kwargs) -> DistillApp:
        return DistillApp(runs_dir, starter=ScriptedStarter(), chat_backend=None if real else EchoBackend(),
                          poll_interval=60, **kwargs)

    await shoot(app(), "runs", (100, 24))
    await shoot(app(run_dir=run_dir), "dashboard", (120, 36))
    await shoot(app(run_dir=run_dir), "dashboard-80x24", (80, 24))
    question = "What type of creature is the tortoise?" if real else "Jack had 8 pens and gave 3 to Mary. How many are left?"
    await shoot(app(run_dir=run_dir, mode="chat"), "chat", (100, 30), ["ctrl+r", *question, "enter"], wait_for=" ")
    await shoot(app(mode="new"), "new-run", (100, 32))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run folder to show (e.g. runs/demo)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.run.resolve() if arguments.run else None))
