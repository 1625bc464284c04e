"""Dataset recipes are data: one YAML file per recipe in data_recipes/."""
from __future__ import annotations

import sysconfig
from pathlib import Path

from sgtool.config import read_yaml
from sgtool.errors import SgtoolError
from sgtool.workspace import check_name

SOURCE_RECIPES = Path(__file__).resolve().parents[2] / "data_recipes"  # a checkout / editable install
INSTALLED_RECIPES = Path(sysconfig.get_path("data")) / "share" / "sgtool" / "data_recipes"  # a wheel


def recipes_dir() -> Path:
    return SOURCE_RECIPES if SOURCE_RECIPES.is_dir() else INSTALLED_RECIPES


def available_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def load_recipe(name: str) -> dict:
    path = recipes_dir() / f"{check_name(name, 'recipe name')}.yaml"
    if not path.exists():
        raise SgtoolError(f"No dataset recipe named '{name}'.", f"Known recipes: {', '.join(available_recipes())}.")
    return read_yaml(path)
