"""The set-up promised by README.rst is the one CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.rst").read_text(encoding="utf-8")
    section = text.split("Set up and test", 1)[1]
    block = section.split(".. code-block:: bash", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        if line.strip():
            lines.append(line.strip())
    return lines


def test_readme_has_exactly_two_setup_commands_and_ci_runs_them():
    commands = readme_commands()
    assert len(commands) == 2, commands
    install, test = commands
    assert "-c constraints.txt" in install
    assert test.startswith("python -m pytest")
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci_lines
    assert test in ci_lines


def test_constraints_pin_torch_but_setup_does_not():
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==\S+$", constraints, re.MULTILINE)
    setup = (ROOT / "setup.py").read_text()
    assert '"torch>=' in setup
    assert "torch==" not in setup
