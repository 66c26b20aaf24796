# Copyright (c) mmgem contributors. All rights reserved.
"""Reading a plan file that may be hostile: size, JSON, nesting, fields.

A plan file is read by :meth:`~.plan.GEMPlan.load` only through
:func:`read_plan_file` and :func:`parse_plan_json`, and its content is
checked by :func:`check_plan_fields` before any of it is used. Every
problem is a :class:`~.errors.PlanError` that names the file (``source``)
and the field at fault:

- a file larger than :data:`MAX_PLAN_BYTES` (checked before reading);
- bytes that are not UTF-8, or text that is not JSON;
- ``NaN``, ``Infinity``, a float that overflows, or an integer outside
  int64;
- nesting deeper than :data:`MAX_PLAN_DEPTH`;
- a missing or unknown field, or a field of the wrong type (also inside
  ``lp``).
"""
import json
import math
import os
import re
from typing import Any, Callable, Dict, Optional

from .errors import PlanError

#: The largest plan file read, in bytes. A plan holds a few K x M and K x K
#: tables (K datasets, M experts): 11 datasets and 32 experts take ~30 KB.
MAX_PLAN_BYTES = 16 * 2**20

#: The deepest nesting of a plan's JSON (a plan needs 5: plan, lp, x, row).
MAX_PLAN_DEPTH = 12

_INT64 = (-2**63, 2**63 - 1)


class _Refused:
    """A JSON value the parser refused (reported with its field)."""

    def __init__(self, what: str) -> None:
        self.what = what


def _parse_int(text: str):
    if len(text.lstrip('-')) > 19:
        return _Refused(f'an integer of {len(text.lstrip("-"))} digits (outside int64)')
    value = int(text)
    if not _INT64[0] <= value <= _INT64[1]:
        return _Refused(f'the integer {text} (outside int64)')
    return value


def _parse_float(text: str):
    value = float(text)
    if not math.isfinite(value):
        return _Refused(f'{text[:40]!s} (overflows to infinity)')
    return value


def _deep_field(text: str) -> str:
    """The top-level field in which the nesting exceeds the limit."""
    depth, key = 0, None
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        tok = token.group()
        if tok in '[{':
            depth += 1
            if depth > MAX_PLAN_DEPTH:
                break
        elif tok in ']}':
            depth -= 1
        elif depth == 1:
            key = json.loads(tok)
    return '<top level>' if key is None else key


def read_plan_file(path: str, max_bytes: Optional[int] = None) -> str:
    """Read a plan file's text, refusing a too large one before reading.

    Args:
        path (str): The file.
        max_bytes (int, optional): Size limit; defaults to
            :data:`MAX_PLAN_BYTES`.

    Returns:
        str: The text.

    Raises:
        PlanError: A missing, non-regular, too large or non-UTF-8 file.
    """
    limit = MAX_PLAN_BYTES if max_bytes is None else int(max_bytes)
    source = f'plan file {path!r}'
    if not os.path.isfile(path):
        raise PlanError(f'{source} does not exist')
    size = os.path.getsize(path)
    if size > limit:
        raise PlanError(f'{source} is {size} bytes, more than a plan file may be '
                        f'({limit} bytes, mmgem.planner.plan_schema.MAX_PLAN_BYTES)')
    with open(path, 'rb') as f:
        raw = f.read(limit + 1)  # the file may have grown since
    if len(raw) > limit:
        raise PlanError(f'{source} is more than {limit} bytes, more than a plan file may be')
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError as err:
        raise PlanError(f'{source} is not UTF-8 text: {err}') from None


def parse_plan_json(text: str, source: str) -> Any:
    """Parse a plan's JSON, refusing what a plan never holds.

    Args:
        text (str): The JSON text.
        source (str): What it came from, for messages.

    Returns:
        Any: The parsed value (plain dicts, lists, str, int, float, bool,
        None), at most :data:`MAX_PLAN_DEPTH` deep.

    Raises:
        PlanError: Not JSON, too deep, or a non-finite or out-of-range
            number (the field is named).
    """
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=lambda c: _Refused(f'{c} (not a finite number)'))
    except RecursionError:
        raise PlanError(f'{source}: field {_deep_field(text)!r} is nested deeper than '
                        f'{MAX_PLAN_DEPTH} levels') from None
    except ValueError as err:  # JSONDecodeError included
        raise PlanError(f'{source} is not valid JSON: {err}') from None
    stack = [(data, '', 1)]
    while stack:
        value, field, depth = stack.pop()
        if isinstance(value, _Refused):
            raise PlanError(f'{source}: field {field!r} holds {value.what}')
        if isinstance(value, (dict, list)) and depth > MAX_PLAN_DEPTH:
            raise PlanError(f'{source}: field {field.split(".")[0].split("[")[0]!r} is '
                            f'nested deeper than {MAX_PLAN_DEPTH} levels (at {field})')
        if isinstance(value, dict):
            stack.extend((v, f'{field}.{k}' if field else str(k), depth + 1)
                         for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((v, f'{field}[{i}]', depth + 1)
                         for i, v in reversed(list(enumerate(value))))
    return data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _or_none(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_STR = (lambda v: isinstance(v, str), 'a string')
_INT = (_is_int, 'an integer')
_NUM = (_is_num, 'a number')
_DICT = (lambda v: isinstance(v, dict), 'an object')

#: Every field of a plan: (check, what it must be).
PLAN_FIELDS: Dict[str, tuple] = {
    'format': _STR,
    'version': _INT,
    'hash': _STR,
    'dataset_names': (_list_of(_STR[0]), 'a list of strings'),
    'loads': (_list_of(_is_num), 'a list of numbers'),
    'images': (_list_of(_is_int), 'a list of integers'),
    'similarity': (_list_of(_list_of(_is_num)), 'a list of lists of numbers'),
    'similarity_spec': (_or_none(_DICT[0]), 'an object or null'),
    'num_experts': _INT,
    'capacity_factor': (_or_none(_is_num), 'a number or null'),
    'capacity': (_or_none(_is_int), 'an integer or null'),
    'beta': _NUM,
    'solver': _STR,
    'quota': (_list_of(_list_of(_is_int)), 'a list of lists of integers'),
    'thresholds': (_list_of(_list_of(_is_int)), 'a list of lists of integers'),
    'id_digests': (_list_of(_or_none(_DICT[0])), 'a list of objects or nulls'),
    'expert_anchor': (_list_of(_is_int), 'a list of integers'),
    'lp': _DICT,
    'rounded_cost': _NUM,
    'rounding': _STR,
    'integral': (_or_none(_DICT[0]), 'an object or null'),
}

#: Every field of a plan's ``lp``.
LP_FIELDS: Dict[str, tuple] = {
    'bound': _NUM,
    'x': (_list_of(lambda r: isinstance(r, list) and len(r) == 3 and _is_int(r[0])
                   and _is_int(r[1]) and _is_num(r[2])),
          'a list of [dataset, column, value] triples'),
    'y': (_list_of(_is_num), 'a list of numbers'),
    'u': (_list_of(_is_num), 'a list of numbers'),
    'status': _STR,
    'solver': _STR,
    'rounds': _INT,
    'columns': _INT,
    'value': _NUM,
    'duals': _DICT,
}


def _check_fields(data: Dict, fields: Dict[str, tuple], source: str, prefix: str,
                  optional=()) -> None:
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise PlanError(f'{source}: unknown field {prefix}{unknown[0]!r}'
                        + (f' (and {unknown[1:]})' if len(unknown) > 1 else '')
                        + f'; a plan has exactly the fields {sorted(fields)}')
    for name, (check, what) in fields.items():
        if name not in data:
            if name in optional:
                continue
            raise PlanError(f'{source} misses the field {prefix}{name!r}')
        if not check(data[name]):
            shown = repr(data[name])
            shown = shown if len(shown) <= 80 else shown[:77] + '...'
            raise PlanError(f'{source}: field {prefix}{name!r} is {shown}, expected {what}')


def check_plan_fields(data: Dict, source: str, allow_missing_hash: bool = False) -> None:
    """Check that a plan dict has exactly the plan's fields, each of its
    type (also those of ``lp``).

    Args:
        data (dict): The parsed plan (format and version already checked).
        source (str): What it came from, for messages.
        allow_missing_hash (bool): Accept a plan without ``hash``.

    Raises:
        PlanError: An unknown, missing or mistyped field (named).
    """
    _check_fields(data, PLAN_FIELDS, source, '',
                  optional=('hash', ) if allow_missing_hash else ())
    _check_fields(data['lp'], LP_FIELDS, source, 'lp.')
