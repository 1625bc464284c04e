"""How sgtool spells its command-line options: the CLI declares each flag with `flag`, and every message
below the CLI names a flag through `flag` (a `--set` key through `setting`), so renaming an option in its
declaration renames its hints. tests/test_flags.py checks every name the code passes here against the
options the Typer app has and the settings the configs declare."""
from __future__ import annotations


def flag(name: str) -> str:
    """'--t-end' for the option declared as `t_end` (a config field or a command's parameter)."""
    return "--" + name.replace("_", "-")


def setting(key: str, value: object = "") -> str:
    """'--set lr=' (then `value`): how the declared setting `key`, which is not a flag, is given."""
    return f"{flag('set')} {key}={value}"
