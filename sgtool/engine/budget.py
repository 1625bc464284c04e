"""What a config may ask for: a head's network is sized on PyTorch's meta device (no memory) before it
is built for real, and a network whose training state would not fit in this machine's memory is refused
in one sentence (`--rank 1000000000` would otherwise try to allocate terabytes)."""
from __future__ import annotations

import dataclasses
import os

import torch

from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.heads import TrainableHead, TrainData

TRAINING_COPIES = 4  # weights, gradients and Adam's two moments, each one float per parameter


def parameter_count(head: TrainableHead, data: TrainData) -> int | None:
    """The parameters (and buffers) of the network head.build would make, counted without allocating;
    None for a head whose build cannot run on the meta device."""
    try:
        with torch.device("meta"):
            model = head.build(dataclasses.replace(data, device="meta"))
        count = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
    except SgtoolError:
        raise
    except Exception:  # noqa: BLE001 - no estimate, the real build decides
        count = None
    finally:
        head.model = None
    return count


def memory_available(device: str) -> int | None:
    """Bytes free for training on device (None when unknown)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            info = dict(line.split(":", 1) for line in handle)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def build_within_memory(head: TrainableHead, data: TrainData) -> None:
    """head.build(data), after checking that its training state fits in the device's free memory."""
    count = parameter_count(head, data)
    free = memory_available(data.device)
    if count is not None and free is not None:
        needed = count * TRAINING_COPIES * 4
        if needed > free:
            raise SgtoolError(f"The {head.name} head with these settings has {count:,} parameters, which need about "
                              f"{_size(needed)} to train, more than the {_size(free)} free on {data.device}.",
                              f"Lower the setting that sizes the network (e.g. {flag('rank')} or a hidden size).")
    head.build(data)
