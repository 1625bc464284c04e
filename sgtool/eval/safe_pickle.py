"""Open a pickled results file (torch.save zip or plain pickle) without running anything from it.

The community benchmark saves `eval_results.pytorch` with torch.save: a pickled dict of BoxList
objects holding tensors. It is read through torch's weights-only unpickler, whose allow-list admits
tensors, plain containers and the globals named here only: the BoxList classes of the community
code bases are mapped to `BoxListData`, a data-only stand-in (no method runs while loading), and
numpy arrays are rebuilt by their own constructors. Any other global (os.system, a __reduce__ that
calls a function, an unknown class) stops the load before it is called: one sentence, exit code 2.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sgtool.errors import SgtoolError

BOXLIST_PATHS = (  # where the community code bases define BoxList (SGB, PySGG and their forks)
    "maskrcnn_benchmark.structures.bounding_box.BoxList",
    "pysgg.structures.bounding_box.BoxList",
)


class BoxListData:
    """The data of a BoxList: `bbox` (N, 4), `size` (width, height), `mode` ("xyxy"/"xywh"), `extra_fields`."""

    bbox: Any = None
    size: tuple = (0, 0)
    mode: str = "xyxy"

    def field(self, name: str) -> Any:
        return (getattr(self, "extra_fields", None) or {}).get(name)


def _numpy_globals() -> list[tuple[Any, str]]:
    """numpy's array rebuilders under both module names numpy has used (numpy.core / numpy._core)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray

    found = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    found += [(type(np.dtype(code)), f"numpy.dtypes.{type(np.dtype(code)).__name__}") for code in "?bhilqBHILQefdgFD"]
    return found


def allowed_globals() -> list[tuple[Any, str]]:
    return [(BoxListData, path) for path in BOXLIST_PATHS] + _numpy_globals()


def _storage_from_bytes(data: bytes) -> Any:
    """A tensor storage pickled inside a plain pickle, itself read weights-only."""
    import io

    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _AllowListUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the allow-listed globals (a plain pickle's tensors included)."""

    def find_class(self, module: str, name: str) -> Any:
        import collections

        import torch

        allowed = {path: obj for obj, path in allowed_globals()}
        allowed.update({"torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
                        "torch.storage._load_from_bytes": _storage_from_bytes,
                        "collections.OrderedDict": collections.OrderedDict})
        found = allowed.get(f"{module}.{name}")
        if found is None:
            raise pickle.UnpicklingError(f"it names the global {module}.{name}, which is not allowed")
        return found


def _reason(exc: Exception) -> str:
    """The line of an unpickling error that names what was refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "global" in line or "Trying to" in line]
    return ((named or lines or [type(exc).__name__])[0])[:200].rstrip(".,;: ")


def _refused(exc: Exception) -> bool:
    """Whether loading stopped at a global outside the allow-list (rather than at a damaged file)."""
    text = str(exc)
    return any(word in text for word in ("GLOBAL", "global", "Trying to", "blocked", "allowlisted", "Unsupported class"))


def load_results_pickle(path: Path) -> Any:
    """The object a torch.save / pickle file holds, refused in one sentence if loading it would run code."""
    import torch

    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with torch.serialization.safe_globals(allowed_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        with open(path, "rb") as handle:  # a plain pickle (pickle.dump), no torch container
            return _AllowListUnpickler(handle).load()
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError, KeyError,
            IndexError, ImportError, OSError, zipfile.BadZipFile) as exc:
        if not _refused(exc):
            raise SgtoolError(f"{path} cannot be read as a pickled results file ({_reason(exc)}).",
                              "The file may be truncated or of another kind; save the results again.") from None
        raise SgtoolError(f"{path} was refused: it is not a pickle of tensors, arrays, plain containers and "
                          f"BoxLists only, so loading it could run code ({_reason(exc)}).",
                          "Save the results as the community benchmark does (torch.save of BoxLists), or "
                          "export them to the plain JSON format (docs/evaluate-your-predictions.md).") from None
