# Copyright (c) mmgem contributors. All rights reserved.
__version__ = '0.1.0'


def parse_version_info(version_str: str) -> tuple:
    """Parse a version string into a tuple of ints and strings.

    Args:
        version_str (str): The version string, e.g. ``'0.1.0'``.

    Returns:
        tuple: The version info, e.g. ``(0, 1, 0)``.
    """
    info = []
    for part in version_str.split('.'):
        info.append(int(part) if part.isdigit() else part)
    return tuple(info)


version_info = parse_version_info(__version__)
