"""The fenced examples of the documentation: README.md and docs/**/*.md, read as the tests see
them. No fp_monitor import here: the tests drive the installed `fpmon` command (the one place
where the docs tooling imports the package is docs/gen_reference.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL = ("console", "bash", "sh", "shell")
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(\S.*?)\s*-->$")
_FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    """1-based line of the opening fence."""
    lang: str
    text: str
    not_run: str | None
    """The reason given in `<!-- not-run: reason -->` right before the fence, if any."""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    found = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening.groups()
        start = i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i].removeprefix(indent))
            i += 1
        previous = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = NOT_RUN.match(previous)
        text = "\n".join(body) + "\n"
        found.append(Block(path, start + 1, lang, text, marker.group(1) if marker else None))
        i += 1
    return found


def all_blocks(*langs: str) -> list[Block]:
    return [b for page in pages() for b in blocks(page) if b.lang in langs]


def commands(block: Block) -> str:
    """The shell commands of a block: a console block's `$ ` lines with their continuation lines
    and here-documents (its output left out); a bash or sh block whole."""
    if block.lang != "console":
        return block.text
    script: list[str] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith("$ "):
            continue
        command = [line[2:]]
        while command[-1].endswith("\\") and i < len(lines):
            command.append(lines[i])
            i += 1
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", command[0])
        if heredoc:
            while i < len(lines):
                command.append(lines[i])
                i += 1
                if lines[i - 1].strip() == heredoc.group(1):
                    break
        script.extend(command)
    return "\n".join(script) + "\n"
