"""The README's examples run and print what the README says they print.

Every ``.. code-block:: python`` of README.rst that is followed by a ``.. code-block:: text``
is run in a fresh namespace, and its standard output must equal that text block line by
line. The quick start script runs the first of them verbatim.
"""

import contextlib
import io
import pathlib
import re
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.rst").read_text(encoding="utf-8")

_BLOCK = re.compile(r"^\.\. code-block:: (\w+)\n\n((?:(?:    .*)?\n)+)", re.MULTILINE)


def code_blocks(text):
    """(language, dedented body, start offset) of every code block, in order."""
    return [
        (m.group(1), textwrap.dedent(m.group(2)).strip("\n") + "\n", m.start())
        for m in _BLOCK.finditer(text)
    ]


def python_examples(text):
    """(name, code, expected output) of each python block followed by a text block."""
    blocks = code_blocks(text)
    examples = []
    for (lang, code, start), (next_lang, output, _) in zip(blocks, blocks[1:], strict=False):
        if lang == "python" and next_lang == "text":
            titles = re.findall(r"^\*\*(.+?)\*\*", text[:start], re.MULTILINE)
            examples.append((titles[-1] if titles else f"example at {start}", code, output))
    return examples


EXAMPLES = python_examples(README)


def test_readme_has_an_example_per_family():
    assert [name for name, _, _ in EXAMPLES] == [
        "TaskMet",
        "SCML",
        "Task attribution",
        "Task discovery",
    ]


@pytest.mark.parametrize(
    ("code", "expected"),
    [pytest.param(code, out, id=name) for name, code, out in EXAMPLES],
)
def test_readme_example_prints_what_the_readme_says(code, expected):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, "README.rst", "exec"), {"__name__": "__readme__"})
    assert stdout.getvalue().splitlines() == expected.splitlines()


def test_quick_start_runs_the_first_readme_example_verbatim():
    _, code, _ = EXAMPLES[0]
    script = (ROOT / "examples" / "quick_start.py").read_text(encoding="utf-8")
    assert code in script
    # public names only: no private module such as sktaskmet._backend
    assert not re.search(r"sktaskmet(\.\w+)*\._[a-z]", script)


def test_python_blocks_without_output_are_not_silently_skipped():
    # Every python block of the README states what it prints.
    languages = [lang for lang, _, _ in code_blocks(README)]
    for i, lang in enumerate(languages):
        if lang == "python":
            assert i + 1 < len(languages) and languages[i + 1] == "text", i


def test_landing_page_quick_start_is_the_readme_example():
    _, code, output = EXAMPLES[0]
    index = (ROOT / "doc" / "index.rst").read_text(encoding="utf-8")
    blocks = code_blocks(index)
    assert ("python", code) in [(lang, body) for lang, body, _ in blocks]
    assert ("text", output) in [(lang, body) for lang, body, _ in blocks]


@pytest.mark.parametrize("name", ["README.rst", "CHANGELOG.rst", "CONTRIBUTING.rst"])
def test_top_level_documents_are_valid_restructuredtext(name):
    # README.rst is also the package's long description: a warning there breaks its page.
    docutils_core = pytest.importorskip("docutils.core")
    text = (ROOT / name).read_text(encoding="utf-8")
    docutils_core.publish_doctree(text, settings_overrides={"halt_level": 2, "report_level": 2})
