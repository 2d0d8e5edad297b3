"""Helpers of the dashboard's browser tests: the served dashboard, logging in, screenshots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCREENSHOTS = Path(__file__).parent.parent.parent / "build" / "screenshots"
PASSWORD = "a long password"


@dataclass
class Served:
    url: str
    state_url: str
    data_dir: Path
    log: Path


def shot(page: Any, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def login(page: Any, url: str, user: str = "alice", project: str = "demo",
          password: str = PASSWORD) -> None:  # fmt: skip
    page.goto(f"{url}/dashboard/login")
    page.fill("input[name=project]", project)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("#login-form button[type=submit]")
