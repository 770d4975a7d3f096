"""The documentation's commands run as written: every fenced ``bash`` block of README.md and
docs/ is read, each ``python <script> ...`` line is parsed by the script's own argument parser
(the job itself is not run), its config files exist and its config overrides name real keys;
``make`` targets and ``bash`` scripts exist; relative links and their anchors resolve."""
import argparse
import contextlib
import glob
import io
import os
import re
import runpy
import shlex
import sys
from typing import List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted([os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
PYTHON_NAMES = ("python", "python3", ".venv/bin/python")
# Commands the test does not check beyond their presence (system tools, shell built-ins).
OTHER_COMMANDS = {"cd", "git", "pip", "apt-get", "export", "ls", "cat", "rm", "mkdir", "cp", "sudo", "source",
                  "tensorboard", "nvidia-smi", "wget", "curl", "unzip", "tar", "ln", "du", "df", "echo", "for",
                  "do", "done", "hyperfine", "docker"}


def bash_blocks(path: str) -> List[Tuple[int, str]]:
    """``(line number, command)`` of the fenced ``bash`` blocks of a markdown file, backslash
    continuations joined and comments dropped."""
    commands, block, start, inside = [], [], 0, False
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not inside and re.fullmatch(r"```(bash|sh|shell)", stripped):
            inside, block = True, []
            continue
        if inside and stripped.startswith("```"):
            inside = False
            pending, pending_start = "", 0
            for offset, text in block:
                text = text.rstrip()
                if not pending:
                    pending_start = offset
                if text.endswith("\\"):
                    pending += text[:-1] + " "
                    continue
                pending += text
                command = _drop_comment(pending).strip()
                if command:
                    commands.append((pending_start, command))
                pending = ""
            continue
        if inside:
            block.append((number, line))
    return commands


def _drop_comment(command: str) -> str:
    """``command`` without a trailing ``# comment`` (a ``#`` inside quotes or a word is kept)."""
    quote = None
    for index, char in enumerate(command):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or command[index - 1].isspace()):
            return command[:index]
    return command


def all_commands():
    found = []
    for path in DOCS:
        for number, command in bash_blocks(path):
            found.append(pytest.param(command, id=f"{os.path.relpath(path, ROOT)}:{number}"))
    return found


class _Parsed(Exception):
    def __init__(self, namespace):
        super().__init__("parsed")
        self.namespace = namespace


@contextlib.contextmanager
def _stop_after_parsing():
    """ArgumentParser.parse_args / parse_known_args raise _Parsed with their result instead of
    returning it (the outermost call only: parse_args calls parse_known_args)."""
    originals = {name: getattr(argparse.ArgumentParser, name) for name in ("parse_args", "parse_known_args")}
    depth = [0]

    def stopping(name):
        def parse(self, args=None, namespace=None):
            depth[0] += 1
            try:
                result = originals[name](self, args, namespace)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                raise _Parsed(result[0] if name == "parse_known_args" else result)
            return result
        return parse

    for name in originals:
        setattr(argparse.ArgumentParser, name, stopping(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(argparse.ArgumentParser, name, original)


def parse_with_script(script: str, argv: List[str]) -> argparse.Namespace:
    """Run ``script`` as ``__main__`` with ``argv`` until its parser has parsed them."""
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [script] + argv
    err = io.StringIO()
    try:
        with _stop_after_parsing(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(script, run_name="__main__")
    except _Parsed as parsed:
        return parsed.namespace
    except SystemExit as e:
        pytest.fail(f"{os.path.relpath(script, ROOT)} rejected its arguments (exit {e.code}): {err.getvalue().strip()}")
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    pytest.fail(f"{os.path.relpath(script, ROOT)} finished without parsing any arguments")


def _split_command(command: str) -> List[str]:
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # VAR=value prefixes
        words = words[1:]
    return words


def _check_config_overrides(namespace, words):
    configs = [getattr(namespace, name) for name in ("config_file",) if getattr(namespace, name, None)]
    for word in words:
        if word.endswith((".yaml", ".yml")) and not word.startswith(("output/", "/tmp")):
            assert os.path.isfile(os.path.join(ROOT, word)), f"config file {word} does not exist"
    opts = getattr(namespace, "opts", None)
    if not configs or not opts or not isinstance(opts, list):
        return
    opts = [o for o in opts if o != "--"]
    if len(opts) % 2:
        pytest.fail(f"config overrides must be KEY VALUE pairs, got {opts}")
    from zsmask.engine import build_config

    build_config(os.path.join(ROOT, configs[0]), opts)  # raises on a key the config does not have


@pytest.mark.parametrize("command", all_commands())
def test_documented_command_runs_as_written(command):
    for part in re.split(r"\s*(?:&&|;|\|\|)\s*", command):
        words = _split_command(part)
        if not words:
            continue
        program = words[0]
        if program in PYTHON_NAMES:
            if words[1:2] == ["-m"]:
                continue  # python -m pytest / pip: modules of installed packages
            script = os.path.join(ROOT, words[1])
            assert os.path.isfile(script), f"{words[1]} does not exist"
            if "--help" in words or "-h" in words:
                continue
            namespace = parse_with_script(script, words[2:])
            _check_config_overrides(namespace, words[2:])
        elif program == "make":
            with open(os.path.join(ROOT, "Makefile")) as f:
                targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", f.read(), flags=re.M))
            for target in words[1:]:
                assert "=" in target or target in targets, f"make target {target!r} is not in the Makefile"
        elif program == "bash":
            assert os.path.isfile(os.path.join(ROOT, words[1])), f"{words[1]} does not exist"
        else:
            assert program in OTHER_COMMANDS or os.path.isfile(os.path.join(ROOT, program)), \
                f"unknown command {program!r}: write it out in full, or in a ```text block if it is not meant to run"


def _anchors(path: str) -> set:
    """GitHub's anchors of a markdown file's headings."""
    anchors, inside = set(), False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip().startswith("```"):
                inside = not inside
            if inside or not line.startswith("#"):
                continue
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title.replace("`", ""))
            anchor = title.replace(" ", "-")
            suffix, candidate = 0, anchor
            while candidate in anchors:
                suffix += 1
                candidate = f"{anchor}-{suffix}"
            anchors.add(candidate)
    return anchors


@pytest.mark.parametrize("path", DOCS, ids=[os.path.relpath(p, ROOT) for p in DOCS])
def test_relative_links_and_anchors_resolve(path):
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(resolved):
            broken.append(f"{target} (no file {os.path.relpath(resolved, ROOT)})")
        elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, "broken links: " + "; ".join(broken)


def test_the_readme_stays_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move details to docs/"
