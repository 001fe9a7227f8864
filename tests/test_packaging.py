"""The set-up promised by README.rst is the one CI runs."""

import pathlib
import re
import shutil
import subprocess

import pytest

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


def _ci_install_block():
    """The lines of .ci/run from the ``fail`` helper's definition and the guarded README
    install command (from its opening ``{`` to the ``} || fail`` that closes it)."""
    text = (ROOT / ".ci" / "run").read_text()
    fail = re.search(r"^fail\(\) \{\n.*?^\}\n", text, re.MULTILINE | re.DOTALL)
    guarded = re.search(r"^\{\n[^{}]*?-c constraints\.txt[^{}]*?\n\} \|\| fail .*\n", text, re.M)
    assert fail and guarded, "the README install command is not guarded in .ci/run"
    return fail.group(0) + guarded.group(0)


def _run_ci_install_block(tmp_path, python_exit_code):
    # A stand-in for python: "pip install" exits with python_exit_code.
    script = (
        "set -euo pipefail\n"
        f'python() {{ echo "python $*"; return {python_exit_code}; }}\n'
        + _ci_install_block()
        + "echo 'next step reached'\n"
    )
    path = tmp_path / "ci_block.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, check=False)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_failing_install_stops_ci_at_that_step(tmp_path):
    failed = _run_ci_install_block(tmp_path, python_exit_code=1)
    assert failed.returncode != 0
    assert "next step reached" not in failed.stdout
    assert "README install command failed" in failed.stderr
    passed = _run_ci_install_block(tmp_path, python_exit_code=0)
    assert passed.returncode == 0, passed.stderr
    assert "examples/quick_start.py" in passed.stdout
    assert "next step reached" in passed.stdout


def test_ci_prints_the_time_of_each_step():
    text = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^trap summary EXIT$", text, re.MULTILINE)
    assert "time per step" in text
    assert "SCIPY_ARRAY_API=1" in text and "TRITON_INTERPRET=1" in text
