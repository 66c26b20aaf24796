# Copyright (c) mmgem contributors. All rights reserved.
"""Bytes the expert-parallel exchange moves between ranks.

Every call of :class:`mmgem.models.layers.ep_all_to_all.AllToAll` (forward
and backward) adds the bytes this rank sends to *other* ranks and receives
from them; what a rank "sends" to itself is a local copy and is not counted.
:class:`mmgem.engine.hooks.ExpertParallelExchangeHook` reads and resets the
counter after every training iteration and logs it.
"""
from dataclasses import dataclass


@dataclass
class ExchangeStats:
    """Per-process counter of the exchange's traffic.

    Attributes:
        sent_bytes (int): Bytes sent to other ranks.
        received_bytes (int): Bytes received from other ranks.
        sent_rows (int): Token rows sent to other ranks (forward only).
        exchanges (int): Collective token exchanges that ran (forward and
            backward); an exchange skipped because nothing had to move is
            not counted.
    """

    sent_bytes: int = 0
    received_bytes: int = 0
    sent_rows: int = 0
    exchanges: int = 0

    def reset(self) -> None:
        """Set every counter to 0."""
        self.sent_bytes = self.received_bytes = 0
        self.sent_rows = self.exchanges = 0

    def snapshot(self) -> dict:
        """Return the counters as a dict.

        Returns:
            dict: ``sent_bytes``, ``received_bytes``, ``sent_rows`` and
            ``exchanges``.
        """
        return dict(sent_bytes=self.sent_bytes,
                    received_bytes=self.received_bytes,
                    sent_rows=self.sent_rows,
                    exchanges=self.exchanges)


_STATS = ExchangeStats()


def exchange_stats() -> ExchangeStats:
    """The process-wide :class:`ExchangeStats` of the expert exchange.

    Returns:
        ExchangeStats: The (mutable) counter.
    """
    return _STATS
