"""The readers of a run's results (cluster/results.py); the writer's tests are in
tests/actors/test_segments.py, issue 21's rows in tests/cluster/test_hardening_results.py."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from actors.segments import SegmentWriter
from cluster.results import check_parts, part_paths, query, read_polars, read_table


def test_an_empty_run_reads_as_the_base_schema(tmp_path):
    t = read_table(tmp_path)
    assert t.num_rows == 0 and t.schema.names[:2] == ["run_id", "sweep"]
    assert check_parts(tmp_path) == []


def test_parts_of_an_older_run_with_differing_schemas_still_read(tmp_path):
    """Runs written before one schema per run: chunk and trial parts with different columns/types."""
    pq.write_table(pa.table({"row_kind": ["chunk"], "trial_number": [0], "intermediate": [0.5]}),
                   tmp_path / "part-000000.parquet")
    pq.write_table(pa.table({"row_kind": ["trial"], "trial_number": [0], "accuracy": [0.9], "bits": [4]}),
                   tmp_path / "part-000001.parquet")
    pq.write_table(pa.table({"row_kind": ["trial"], "trial_number": [1], "bits": [4.5]}),
                   tmp_path / "part-000002.parquet")
    t = read_table(tmp_path)
    assert t.column("bits").to_pylist() == [None, 4.0, 4.5]
    assert t.column("intermediate").to_pylist() == [0.5, None, None]
    n = query(tmp_path, "SELECT count(accuracy) AS n FROM results").column("n")[0].as_py()
    assert n == 1 and read_polars(tmp_path).height == 3


def test_a_resumed_older_run_is_normalised_to_one_schema(tmp_path):
    pq.write_table(pa.table({"row_kind": ["chunk"], "trial_number": [0], "intermediate": [0.5]}),
                   tmp_path / "part-000000.parquet")
    pq.write_table(pa.table({"row_kind": ["trial"], "trial_number": [0], "accuracy": [0.9]}),
                   tmp_path / "part-000001.parquet")
    w = SegmentWriter(tmp_path)
    w.append([{"row_kind": "trial", "trial_number": 1, "accuracy": 0.8}])
    w.close()
    schemas = [pq.read_schema(p).remove_metadata() for p in part_paths(tmp_path)]
    assert len(schemas) == 3 and all(s.equals(schemas[0]) for s in schemas)
    assert read_table(tmp_path).column("accuracy").to_pylist() == [None, 0.9, 0.8]
