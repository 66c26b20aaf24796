# Copyright (c) mmgem contributors. All rights reserved.
"""One check for an argument that must be one of a few names."""
from typing import Any, Sequence


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Refuse ``value`` unless it is one of ``choices``.

    Args:
        name (str): The argument's name, for the message.
        value: Its value.
        choices (Sequence): The accepted values.

    Raises:
        ValueError: ``value`` is not in ``choices``; the message names the
            argument, the accepted values and the value.
    """
    if value not in choices:
        raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}')
