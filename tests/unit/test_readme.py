"""The README's commands work as written: every ``tsalign`` command in its code blocks (and those of the examples'
READMEs) is accepted by the real CLI parser, every file it names exists, every ``make`` target and playbook it
names is there; and the ones that need no privilege, no VM and no earlier command's output but the README's own
(conversions, summaries, alignments and analyses of the shipped captures, the batch) are run, in a scratch
directory, with the exit codes the README says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tsalign import exitcodes
from tsalign.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "examples").glob("*/README.md"))]
TSALIGN = ".venv/bin/tsalign"
# run for real: reading shipped files only (`calibrate`, `selftest`, `capture`, `microvm`, `precheck`... need the
# machine's KVM or tracefs and are run by their own tests)
RUN_VERBS = {"convert", "events", "align", "align-batch", "analyze"}


def commands(doc: Path) -> list[str]:
    """The shell lines of ``doc``'s fenced code blocks, backslash continuations joined, comments dropped."""
    out, block, inside = [], "", False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside or line.lstrip().startswith("#") or not line.strip():
            continue
        block += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            out.append(block)
            block = ""
    return out


def pieces(line: str) -> list[list[str]]:
    """The simple commands of ``line`` (split at ``&&``, ``||``, ``;``, ``|``, ``&``), each as argv without its
    redirections."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    cmds, cur, redirect = [], [], False
    for w in lex:
        if redirect:
            redirect = False
        elif w in ("&&", "||", ";", "|", "&"):
            cmds.append(cur)
            cur = []
        elif w in (">", ">>", "<"):
            redirect = True
        else:
            cur.append(w)
    return [c for c in [*cmds, cur] if c]


def tsalign_lines() -> list[tuple[Path, str]]:
    return [(d, line) for d in DOCS for line in commands(d) if TSALIGN in line]


def test_the_readme_has_commands_to_check() -> None:
    # (the extraction itself: a README whose blocks it stopped finding would pass every check below)
    assert len(tsalign_lines()) >= 30
    assert any("make demo" in line for line in commands(REPO / "README.md"))


@pytest.mark.parametrize("doc,line", tsalign_lines(), ids=lambda x: x if isinstance(x, str) else x.name)
def test_each_tsalign_command_parses(doc: Path, line: str) -> None:
    parser = build_parser()
    for argv in pieces(line):
        if argv[0] != TSALIGN:
            continue
        try:
            parser.parse_args(argv[1:])
        except SystemExit as e:
            pytest.fail(f"{doc.name}: `{line}` is refused by the CLI parser (exit {e.code})")
        for a in argv[1:]:  # the shipped inputs it names exist
            if a.startswith("examples/"):
                assert (REPO / a).exists(), f"{doc.name}: `{line}` names {a}, which is not in the repository"


def test_make_targets_and_playbooks_exist() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))
    seen = 0
    for doc in DOCS:
        for line in commands(doc):
            for argv in pieces(line):
                if argv[0] == "make":
                    seen += 1
                    assert set(argv[1:]) <= targets, f"{doc.name}: `{line}`: no such make target"
                elif argv[0].endswith("ansible-playbook"):
                    seen += 1
                    files = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-i"]
                    files += [a for a in argv[1:] if a.startswith("playbooks/")]
                    for f in files:
                        assert (REPO / f).exists(), f"{doc.name}: `{line}` names {f}, which is not in the repository"
    assert seen >= 8


def _expected(line: str) -> int:
    """The exit code the README gives ``line``: "fail" for the shipped capture judged with an offset 1e6 cycles off
    and for the foreign pair without the offset debugfs showed (its trace's kvm_write_tsc_offset was never applied),
    "pass" for the others; a trailing ``# pass`` / ``# fail`` says it for its line."""
    said = re.search(r"\s#\s*(pass|fail)\b", line)
    if said:
        return exitcodes.OK if said.group(1) == "pass" else exitcodes.VERDICT_FAIL
    foreign_unset = "examples/foreign" in line and " align " in line and "--tsc-offset" not in line
    return exitcodes.VERDICT_FAIL if "out/aligned-wrong" in line or foreign_unset else exitcodes.OK


def _runnable(line: str) -> bool:
    argvs = pieces(line)
    if line.rstrip().endswith("&"):
        return False
    tsa = [a for a in argvs if a[0] == TSALIGN]
    return bool(tsa) and all(a[1] in RUN_VERBS and "--calibration" not in a for a in tsa)


def test_the_commands_that_read_shipped_files_run_as_written(tmp_path: Path) -> None:
    """Run in a scratch directory holding links to the checkout's examples and venv, so that out/ is the
    scratch's, in the README's order (the batch's JSON is written by the line before it)."""
    assert (REPO / ".venv" / "bin" / "tsalign").exists(), "the README's commands run .venv/bin/tsalign: make venv"
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = {**os.environ, "TSALIGN_REAP": "0"}
    ran = []
    for doc in DOCS:
        for line in commands(doc):
            if not _runnable(line) and not (line.startswith("mkdir -p out && echo") and "batch.json" in line):
                continue
            r = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=600)
            want = _expected(line)
            assert "Traceback" not in r.stderr, f"{doc.name}: `{line}` crashed:\n{r.stderr[-2000:]}"
            assert r.returncode == want, (f"{doc.name}: `{line}` exited {r.returncode}, the README says "
                                          f"{want}:\n{r.stderr[-2000:]}")
            ran.append(line)
    # conversions (4), events (2), alignments of the shipped and foreign captures (4 + 3 + 1 in examples/foreign),
    # the analysis, the batch: what this test is for; fewer means the README or the filter changed
    assert len(ran) >= 14, ran
