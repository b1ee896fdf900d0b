"""The result sink: one actor per run, the only writer of its result files (DESIGN decision 4).

A thin Ray actor around `actors.segments.SegmentWriter`. It is pinned to the head node (profile
`sink_head`) so parts land on the driver's disk, and restarts forever: a restarted sink's
`__init__` recovers the flushed batches of the segment its previous incarnation left behind. It
adopts only segments whose writer is provably gone and never deletes one that another writer may
still be writing (`left_alone` in `stats()`; see `actors/segments.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray

from actors.segments import SegmentWriter


@ray.remote
class ResultSink:
    def __init__(
        self,
        run_dir: str,
        metadata: Mapping[str, str] | None = None,
        roll_rows: int = 2000,
        roll_seconds: float = 10.0,
    ) -> None:
        self.writer = SegmentWriter(run_dir, metadata, roll_rows=roll_rows, roll_seconds=roll_seconds)

    def append(self, rows: list[dict[str, Any]]) -> int:
        """Write and flush one batch; returns once the rows are on disk (page cache)."""
        return self.writer.append(rows)

    def maybe_roll(self) -> str | None:
        part = self.writer.maybe_roll()
        return str(part) if part else None

    def roll(self) -> str | None:
        part = self.writer.roll()
        return str(part) if part else None

    def stats(self) -> dict[str, int]:
        return {
            "rows_written": self.writer.rows_written,
            "recovered_rows": self.writer.recovered_rows,
            "left_alone": len(self.writer.left_alone),
        }

    def close(self) -> dict[str, int]:
        self.writer.close()
        return self.stats()
