# Copyright (c) mmgem contributors. All rights reserved.
from .uodb_metric import UODBMetric
from .uodb_table import format_uodb_table

__all__ = ['UODBMetric', 'format_uodb_table']
