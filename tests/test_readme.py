"""The README is a newcomer's five minutes: the two commands first, at most 1,500 words, links that resolve."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_it_starts_with_the_install_and_test_commands():
    first_block = README.split("```")[1].strip().splitlines()
    assert first_block == ['pip install -e ".[test]" && sgtool demo', "python -m pytest -q"]
    assert README.index("```") < README.index("\n## ")  # before any section


def test_it_is_at_most_1500_words():
    assert len(README.split()) <= 1500


def test_every_relative_link_points_at_a_file_of_the_repository():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    assert links
    for link in links:
        if "://" not in link:
            assert (ROOT / link).exists(), link
