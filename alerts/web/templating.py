"""The page's Jinja environment (autoescaped) and one way to answer with a rendered template."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).resolve().parent
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True
)


def render(name: str, status_code: int = 200, **context: object) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code)
