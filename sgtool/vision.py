"""torchvision, imported only where it is used (the detector, ROI features, box ops of some heads).

A torch and a torchvision from different builds (a CPU torch with the default PyPI torchvision wheel
is the common case) fail inside `import torchvision` ("operator torchvision::nms does not exist");
`require_torchvision` turns that into one sentence naming both builds and the matching pair.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

from sgtool.errors import SgtoolError

TORCHVISION_MINOR_OFFSET = 15  # torch 2.M pairs with torchvision 0.(M + 15): 2.5 / 0.20, 2.14 / 0.29


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def matching_pair(torch_version: str) -> tuple[str, str]:
    """('2.5.1', '0.20.1') for torch '2.5.1+cpu': the torch release and the torchvision built with it."""
    release = torch_version.split("+")[0]
    parts = release.split(".")
    try:
        major, minor, patch = int(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else "0"
    except (IndexError, ValueError):
        return release, "the matching release"
    return release, f"{major - 2}.{minor + TORCHVISION_MINOR_OFFSET}.{patch}" if major == 2 else "the matching release"


def _torch_build() -> str:
    try:
        import torch

        return str(torch.__version__)  # with its build tag, e.g. 2.5.1+cpu
    except Exception:  # noqa: BLE001 - torch itself broken: say what pip knows
        return _version("torch")


def mismatch_error(exc: BaseException) -> SgtoolError:
    torch_version, vision_version = _torch_build(), _version("torchvision")
    torch_release, vision_release = matching_pair(torch_version)
    reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    return SgtoolError(
        f"torchvision {vision_version} cannot be loaded with torch {torch_version} ({reason}): the two come from "
        "different builds, and the detector, ROI features and box operations need a matching pair.",
        f"Install a matching pair, e.g. `pip install torch=={torch_release} torchvision=={vision_release}`; for a "
        f"CPU-only machine `pip install torch=={torch_release}+cpu torchvision=={vision_release}+cpu --index-url "
        "https://download.pytorch.org/whl/cpu`.")


def require_torchvision() -> ModuleType:
    """import torchvision, or one sentence (SgtoolError) saying which builds do not match and what to install."""
    try:
        return importlib.import_module("torchvision")
    except (ImportError, RuntimeError, AttributeError, OSError) as exc:
        raise mismatch_error(exc) from exc
