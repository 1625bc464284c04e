"""Stages that chain the others: training, prediction, the demo."""
# distributed.py moved to sgtool/distributed.py (below engine/ and detect/). The old name stays an
# alias of the same module until engine/loop.py imports the new one; then delete this line.
from sgtool import distributed  # noqa: F401
