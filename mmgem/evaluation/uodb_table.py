# Copyright (c) mmgem contributors. All rights reserved.
"""The per-dataset result table in the layout of DAMEX Table 1."""
from typing import Mapping, Optional, Sequence


def format_uodb_table(columns: Sequence[str],
                      rows: Mapping[str, Sequence[Optional[float]]],
                      first_header: str = 'Metric') -> str:
    """Render per-dataset results as a markdown table.

    One column per dataset and a ``Mean`` column (the mean of the row's
    present values), values in percent with one decimal, as DAMEX Table 1.

    Args:
        columns (Sequence[str]): Dataset column titles, in order.
        rows (Mapping[str, Sequence[float | None]]): Row label to one value
            per dataset, in [0, 1]; None (not evaluated) prints as ``-`` and
            is left out of the mean.
        first_header (str): Title of the row-label column.

    Returns:
        str: The markdown table, ending with a newline.
    """
    lines = [
        '| ' + ' | '.join([first_header, *columns, 'Mean']) + ' |',
        '|' + '---|' * (len(columns) + 2)
    ]
    for label, values in rows.items():
        if len(values) != len(columns):
            raise ValueError(f'row {label!r} has {len(values)} values for '
                             f'{len(columns)} columns')
        present = [v for v in values if v is not None]
        mean = sum(present) / len(present) if present else None
        cells = ['-' if v is None else f'{100 * v:.1f}'
                 for v in [*values, mean]]
        lines.append('| ' + ' | '.join([label, *cells]) + ' |')
    return '\n'.join(lines) + '\n'
