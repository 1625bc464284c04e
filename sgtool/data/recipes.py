"""Dataset recipes are data: one YAML file per recipe in data_recipes/."""
from __future__ import annotations

from pathlib import Path

from sgtool.config import read_yaml
from sgtool.errors import SgtoolError

RECIPES_DIR = Path(__file__).resolve().parents[2] / "data_recipes"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name: str) -> dict:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.exists():
        raise SgtoolError(f"No dataset recipe named '{name}'.", f"Known recipes: {', '.join(available_recipes())}.")
    return read_yaml(path)
