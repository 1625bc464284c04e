"""Shell completions: made by `sgtool completions SHELL` from the installed app (nothing generated is kept
in the repository, so nothing can go stale), and working in bash."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from test_kinds import toy_registered  # noqa: F401 (a fixture: a head declared in a test module)

@pytest.fixture(scope="module")
def bash_script(tmp_path_factory) -> Path:
    from sgtool.cli import loaded_app
    from sgtool.completions import script

    path = tmp_path_factory.mktemp("completions") / "sgtool.bash"
    path.write_text(script(loaded_app(), "bash"), encoding="utf-8")
    return path


def bash_complete(script_path: Path, *words: str) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    script = (f"source '{script_path}'\nCOMP_WORDS=({line})\n"
              f"COMP_CWORD={len(words) - 1}\n_sgtool\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return result.stdout.split()


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


@needs_bash
def test_bash_completes_commands_options_and_choices(bash_script):
    assert bash_complete(bash_script, "sgtool", "prep") == ["prepare"]
    assert sorted(bash_complete(bash_script, "sgtool", "pre")) == ["predict", "prepare"]
    assert "synth" in bash_complete(bash_script, "sgtool", "prepare", "")
    assert bash_complete(bash_script, "sgtool", "prepare", "synth", "--im") == ["--images"]
    assert bash_complete(bash_script, "sgtool", "-w", "ws", "prepare", "synth", "--im") == ["--images"]
    assert sorted(bash_complete(bash_script, "sgtool", "--device", "c")) == ["cpu", "cuda"]
    assert "--json" in bash_complete(bash_script, "sgtool", "info", "--")
    assert "--rank" in bash_complete(bash_script, "sgtool", "train", "--")  # a head's own flag


@needs_bash
def test_a_new_head_is_completed_with_no_file_changed(tmp_path, cli, toy_registered):  # noqa: F811
    result = cli("completions", "bash")
    assert result.code == 0, result.err
    script = tmp_path / "sgtool.bash"
    script.write_text(result.out, encoding="utf-8")
    assert bash_complete(script, "sgtool", "train", "--toy-w") == ["--toy-width"]


@pytest.mark.parametrize("shell, marker", [("zsh", "#compdef sgtool"), ("fish", "complete -c sgtool")])
def test_every_shell_gets_a_script_and_an_unknown_one_is_refused(cli, shell, marker):
    result = cli("completions", shell)
    assert result.code == 0 and marker in result.out
    refused = cli("completions", "tcsh")
    assert refused.code == 2 and "tcsh" in refused.err
