"""Shell completions: current with the CLI, and working in bash."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sgtool.cli import loaded_app
from sgtool.completions import generate

COMPLETIONS = Path(__file__).resolve().parents[1] / "completions"


def test_committed_completions_are_current():
    for name, text in generate(loaded_app()).items():
        committed = (COMPLETIONS / name).read_text(encoding="utf-8")
        assert committed == text, f"completions/{name} is stale: run `sgtool completions completions/`"


def bash_complete(*words: str) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    script = (f"source '{COMPLETIONS / 'sgtool.bash'}'\nCOMP_WORDS=({line})\n"
              f"COMP_CWORD={len(words) - 1}\n_sgtool\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_options_and_choices():
    assert bash_complete("sgtool", "prep") == ["prepare"]
    assert sorted(bash_complete("sgtool", "pre")) == ["predict", "prepare"]
    assert "synth" in bash_complete("sgtool", "prepare", "")
    assert bash_complete("sgtool", "prepare", "synth", "--im") == ["--images"]
    assert bash_complete("sgtool", "-w", "ws", "prepare", "synth", "--im") == ["--images"]
    assert sorted(bash_complete("sgtool", "--device", "c")) == ["cpu", "cuda"]
    assert "--json" in bash_complete("sgtool", "info", "--")
