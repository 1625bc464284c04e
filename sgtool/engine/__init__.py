"""Stages that chain the others: training, prediction, the demo."""


def __getattr__(name: str):
    # distributed.py moved to sgtool/distributed.py (below engine/ and detect/); `from sgtool.engine import
    # distributed` still gives that module (loaded on first use: it imports torch) until engine/loop.py
    # imports the new path. Then delete this function.
    if name == "distributed":
        from sgtool import distributed

        return distributed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
