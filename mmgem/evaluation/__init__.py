# Copyright (c) mmgem contributors. All rights reserved.
from .domain_confusion import (
    domain_accuracy,
    domain_confusion,
    domain_routing_shares,
    format_domain_confusion,
)
from .uodb_metric import UODBMetric
from .uodb_table import format_uodb_table

__all__ = [
    'UODBMetric', 'format_uodb_table', 'domain_accuracy', 'domain_confusion',
    'format_domain_confusion', 'domain_routing_shares'
]
