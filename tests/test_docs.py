"""Every code block of README.md and of the documentation site's pages (mkdocs.yml's nav) runs, offline.

Fenced blocks by language:

- ``python``: the blocks of a page run in order in one namespace, in a temporary directory;
- ``bash`` / ``console`` (``$ `` lines): every ``rkd-pml ...`` (or ``python -m rkd_pml ...``,
  ``torchrun ... -m rkd_pml ...``) command is parsed by the real command-line parser, so an
  unknown or renamed flag fails; ``python SCRIPT.py ...`` / ``python -m MODULE ...`` is parsed by
  the script's own argparse parser (the script stops right after parsing); ``bash SCRIPT.sh``
  must name an existing script; any other command needs the block to be skipped;
- ``text``: output, not run.

An HTML comment on the line before a block changes that:

- ``<!-- docs-test: run -->``: the block's ``rkd-pml`` commands run for real (they must be cheap);
- ``<!-- docs-test: torchrun -->``: a python block runs as the only process of a ``torchrun``;
- ``<!-- docs-test: skip REASON -->``: the block is not run; the reason is required.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import re
import runpy
import shlex
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAV = re.findall(r"^\s*- [^:\n]+:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
PAGES = [ROOT / "README.md", *(ROOT / "docs" / page for page in NAV)]  # the README and the site's pages
LANGUAGES = {"python", "bash", "console", "text"}
MARKER = re.compile(r"^<!--\s*docs-test:\s*(\S+)\s*(.*?)\s*-->$")
MARKER_KINDS = {"skip", "run", "torchrun"}


@dataclasses.dataclass
class Block:
    page: str   # relative to the repository root
    line: int   # of the opening fence, 1-based
    lang: str
    code: str
    mark: str = ""    # "", "skip", "run" or "torchrun"
    reason: str = ""  # a skip's reason

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a markdown page, each with the marker on the line before it."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found, i = [], 0
    page = str(path.relative_to(ROOT))
    while i < len(lines):
        fence = re.match(r"^(`{3,})(.*)$", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence[1]), None)
        assert end is not None, f"{page}:{i + 1}: a fence that is never closed"
        block = Block(page, i + 1, fence[2].strip(), "\n".join(lines[i + 1:end]) + "\n")
        before = lines[i - 1].strip() if i else ""
        marker = MARKER.match(before)
        if marker:
            block.mark, block.reason = marker[1], marker[2]
        found.append(block)
        i = end + 1
    return found


ALL_BLOCKS = [b for page in PAGES if page.is_file() for b in blocks_of(page)]  # a missing page: see below


def _pages_with(langs: set[str]) -> list[str]:
    return sorted({b.page for b in ALL_BLOCKS if b.lang in langs and b.mark != "skip"})


def test_every_block_is_labelled_and_every_skip_gives_a_reason():
    problems = []
    for b in ALL_BLOCKS:
        if b.lang not in LANGUAGES:
            problems.append(f"{b.where}: fence language {b.lang!r}, not one of {sorted(LANGUAGES)}")
        if b.mark and b.mark not in MARKER_KINDS:
            problems.append(f"{b.where}: unknown marker 'docs-test: {b.mark}'")
        if b.mark == "skip" and not b.reason:
            problems.append(f"{b.where}: 'docs-test: skip' without a reason")
        if b.mark == "run" and b.lang not in ("bash", "console"):
            problems.append(f"{b.where}: 'docs-test: run' on a {b.lang} block")
        if b.mark == "torchrun" and b.lang != "python":
            problems.append(f"{b.where}: 'docs-test: torchrun' on a {b.lang} block")
    for page in PAGES:  # a marker that is not directly before a fence marks nothing
        lines = page.read_text(encoding="utf-8").split("\n")
        for n, line in enumerate(lines):
            if MARKER.match(line.strip()) and not (n + 1 < len(lines) and lines[n + 1].startswith("```")):
                problems.append(f"{page.relative_to(ROOT)}:{n + 1}: a docs-test marker not followed by a fence")
    assert not problems, "\n".join(problems)
    skipped = [f"{b.where}: {b.reason}" for b in ALL_BLOCKS if b.mark == "skip"]
    print("skipped blocks:\n" + "\n".join(skipped))


def test_the_site_lists_its_pages():
    assert len(NAV) >= 10 and all(page.is_file() for page in PAGES), NAV


def test_readme_test_command_is_the_one_ci_runs():
    """.ci/run runs the README's test command (in its own virtual environment's python)."""
    readme_setup = next(b for b in ALL_BLOCKS if b.page == "README.md" and b.lang == "bash")
    command = "python -m pytest tests"
    assert command in readme_setup.code.splitlines()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\.ci-venv/bin/" + re.escape(command) + "$", ci, re.M), ".ci/run no longer runs " + command


@pytest.mark.parametrize("page", _pages_with({"python"}))
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": "__main__"}
    for b in ALL_BLOCKS:
        if b.page != page or b.lang != "python" or b.mark == "skip":
            continue
        with _torchrun_environment(monkeypatch) if b.mark == "torchrun" else contextlib.nullcontext():
            exec(compile(b.code, b.where, "exec"), namespace)


@contextlib.contextmanager
def _torchrun_environment(monkeypatch):
    """The environment torchrun gives the only process of a run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with monkeypatch.context() as m:
        for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)).items():
            m.setenv(key, value)
        yield


def commands_of(block: Block) -> list[list[str]]:
    """The commands of a shell block as argument lists (continuations joined, comments and
    ``VAR=value`` prefixes dropped, ``&&`` chains split)."""
    text = block.code.replace("\\\n", " ")
    lines = text.splitlines()
    if block.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    commands = []
    for line in lines:
        argv: list[str] = []
        for token in shlex.split(line, comments=True) + ["&&"]:
            if token == "&&":
                while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
                    argv.pop(0)
                if argv:
                    commands.append(argv)
                argv = []
            else:
                argv.append(token)
    return commands


def _cli_argv(argv: list[str]) -> list[str] | None:
    """The ``rkd-pml`` arguments of a command that runs the package's CLI, else None."""
    if argv[0] == "rkd-pml":
        return argv[1:]
    if argv[0] in ("python", "python3") and argv[1:3] == ["-m", "rkd_pml"]:
        return argv[3:]
    if argv[0] == "torchrun" and "-m" in argv and argv[argv.index("-m") + 1] == "rkd_pml":
        return argv[argv.index("-m") + 2:]
    return None


class _Parsed(Exception):
    def __init__(self, extras: list[str]):
        self.extras = extras


def _parse_with_script_parser(where: str, argv: list[str], monkeypatch) -> None:
    """Run a script (``python X.py ...``) or module (``python -m M ...``) until its argparse
    parser has parsed ``argv``; fail on a usage error or an unrecognised argument."""
    original = argparse.ArgumentParser.parse_known_args
    depth = 0

    def parse_known_args(self, args=None, namespace=None):
        nonlocal depth
        depth += 1
        try:
            result = original(self, args, namespace)
        finally:
            depth -= 1
        if depth == 0:
            raise _Parsed(result[1])
        return result

    stderr = io.StringIO()
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
        m.setattr(sys, "path", list(sys.path))
        if argv[1] == "-m":
            m.setattr(sys, "argv", [argv[2], *argv[3:]])
            run = lambda: runpy.run_module(argv[2], run_name="__main__", alter_sys=True)  # noqa: E731
        else:
            script = ROOT / argv[1]
            assert script.is_file(), f"{where}: {argv[1]} does not exist"
            m.setattr(sys, "argv", [str(script), *argv[2:]])
            m.syspath_prepend(str(script.parent))
            run = lambda: runpy.run_path(str(script), run_name="__main__")  # noqa: E731
        try:
            with contextlib.redirect_stderr(stderr):
                run()
        except _Parsed as parsed:
            assert not parsed.extras, f"{where}: {shlex.join(argv)}: unrecognised arguments {parsed.extras}"
            return
        except SystemExit as exc:
            pytest.fail(f"{where}: {shlex.join(argv)}: exit {exc.code}: {stderr.getvalue().strip()}")
    pytest.fail(f"{where}: {shlex.join(argv)} ran to its end without parsing arguments")


@pytest.mark.parametrize("page", _pages_with({"bash", "console"}))
def test_shell_blocks_parse_or_run(page, tmp_path, monkeypatch):
    from rkd_pml.cli import build_parser, main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for b in ALL_BLOCKS:
        if b.page != page or b.lang not in ("bash", "console") or b.mark == "skip":
            continue
        for argv in commands_of(b):
            cli = _cli_argv(argv)
            if cli is not None and b.mark == "run":
                assert main(cli) == 0, f"{b.where}: {shlex.join(argv)} failed"
            elif cli is not None:
                stderr = io.StringIO()
                try:
                    with contextlib.redirect_stderr(stderr):
                        build_parser().parse_args(cli)
                except SystemExit as exc:
                    pytest.fail(f"{b.where}: {shlex.join(argv)}: exit {exc.code}: {stderr.getvalue().strip()}")
            elif argv[0] in ("python", "python3") and len(argv) > 1:
                _parse_with_script_parser(b.where, argv, monkeypatch)
            elif argv[0] == "bash" and len(argv) > 1 and argv[1].endswith(".sh"):
                assert (ROOT / argv[1]).is_file(), f"{b.where}: {argv[1]} does not exist"
            else:
                pytest.fail(f"{b.where}: {shlex.join(argv)}: not a command this test can check; "
                            "mark the block '<!-- docs-test: skip REASON -->'")
