"""The endpoint record: every role's tables present and typed, written whole, read back."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from testbed import errors
from testbed.rtc.record import TABLES, EndpointRecord, table


def test_round_trip_keeps_tables_and_types(tmp_path: Path) -> None:
    packets = table("sender", "packets").frame(
        [
            (5, "media", 7, 1, 90, 97, True, None, None, None),
            (6, "rtx", 8, 1, 90, 98, False, 1, None, None),
        ]
    )
    rec = EndpointRecord("sender", "aiortc", {"cpu": {"cpu_s": 1.0}}, {"packets": packets})
    rec.write(tmp_path)
    back = EndpointRecord.read(tmp_path, "sender")
    assert back.stack == "aiortc" and back.info == {"cpu": {"cpu_s": 1.0}}
    pd.testing.assert_frame_equal(back["packets"], packets)
    assert back["packets"].original_seq.tolist()[1] == 1 and pd.isna(
        back["packets"].original_seq[0]
    )
    # every sender table is there, empty where nothing happened, with its columns
    names = {n for r, n in TABLES if r == "sender"}
    assert set(back.tables) == names and back["frames"].empty
    assert list(back["frames"].columns) == table("sender", "frames").names
    assert not list(tmp_path.glob("sender/.*"))  # no temporary files left


def test_missing_or_foreign_record_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(errors.TestbedError, match="did the receiver process finish"):
        EndpointRecord.read(tmp_path, "receiver")
    (tmp_path / "receiver").mkdir()
    (tmp_path / "receiver" / "info.json").write_text(json.dumps({"schema": 99, "role": "receiver"}))
    with pytest.raises(errors.TestbedError, match="schema 99"):
        EndpointRecord.read(tmp_path, "receiver")


def test_bad_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown tables"):
        EndpointRecord("receiver", "x", tables={"packets": pd.DataFrame()})
    with pytest.raises(errors.TestbedError, match="null values"):
        table("receiver", "drops").frame([(1, "reset", None)])
