"""The README's quickstart runs as written: the first ```python block under its "Quickstart"
heading is run in a fresh interpreter with the suite's server binary, and its output checked."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.timeout(60)


def quickstart() -> str:
    """The first python block of the README's ``## Quickstart`` section."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Quickstart\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section is not None, "README.md has no '## Quickstart' section"
    block = re.search(r"^```python\n(.*?)^```$", section.group(1), re.M | re.S)
    assert block is not None, "the Quickstart section has no ```python block"
    return block.group(1)


def test_quickstart_runs_as_written(server_binary: str, tmp_path: Path) -> None:
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["REDIS_SERVER"] = server_binary
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,  # outside the checkout, as a user would run it
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1 receiver(s)\nb'room:1' b'hello'\n"
    assert done.stderr == ""


def test_every_python_block_of_the_readme_compiles() -> None:
    # The snippets are fragments (top-level await and async with included): they must at
    # least be valid Python, so that a renamed keyword or a typo shows up here.
    blocks = re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) >= 5
    for i, block in enumerate(blocks):
        compile(
            block, f"README.md python block #{i + 1}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
