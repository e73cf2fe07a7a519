"""MDM bridge on hand-written exports that follow Microsoft Graph's documented response shapes."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fleetpulse.agents import mdm
from fleetpulse.agents.mdm import (
    GraphJsonReader,
    RowError,
    SeqStore,
    dead_letters,
    ingest,
    ingest_text,
    pseudonymise,
    read_csv,
    run_ingest,
)
from fleetpulse.cli import app
from fleetpulse.compat import UTC
from fleetpulse.contract import DeviceKind, HealthReport, Platform, ReportSource, decode_report, encode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mdm"
SECRET = b"test-fleet-secret"
AS_OF = datetime(2025, 3, 6, tzinfo=UTC)
PERSONAL = (
    "mustermann",
    "muster@",
    "Erika",
    "city.example",
    "+49",
    "35 391805",
    "356938035643809",
    "F2LXK1ABCD12",
    "R5CW12345XY",
    "a4c3f0112233",
    "KIOSK-0042",
    "DESKTOP-4KQ2M1",
    "LAPTOP-HR-0193",
    "F5D1234ABCDE",
    "0f9d2e6a-2b7c-4a51-9d1e-6c1f0a3b8e11",  # the Intune id itself is replaced by its pseudonym
)


def _ingest(name: str, fmt: str, store: SeqStore | None = None, as_of: datetime = AS_OF):  # type: ignore[no-untyped-def]
    return ingest_text((FIXTURES / name).read_text(), fmt, SECRET, store or SeqStore(":memory:"), as_of, name)  # type: ignore[arg-type]


def test_managed_device_pages_map_to_mobile_reports() -> None:
    result = _ingest("managed_devices_pages.json", "graph-json")
    assert result.rows == 7
    assert len(result.reports) == 3
    phone, android, ipad = result.reports
    assert (phone.kind, phone.platform, phone.source) == (DeviceKind.PHONE, Platform.IOS, ReportSource.MDM)
    assert phone.battery is not None
    assert phone.battery.design_capacity == 100.0
    assert phone.battery.full_charge_capacity == 83.0
    assert phone.battery.cycle_count == 612
    assert phone.battery.health_ratio == pytest.approx(0.83)
    assert phone.collected_at == datetime(2025, 3, 4, 7, 15, 42, tzinfo=UTC)
    assert phone.disks[0].capacity_bytes == 127999672320
    assert phone.system is not None
    assert phone.system.disk_free_bytes == 48318382080
    assert android.battery is None, "health 0 means the MDM did not measure it"
    assert (ipad.kind, ipad.platform) == (DeviceKind.TABLET, Platform.IOS)
    assert [s.reason for s in result.skipped] == ["not a phone or tablet (operatingSystem/deviceType windows)"]
    reasons = [e.reason for e in result.errors]
    assert reasons == [
        "lastSyncDateTime: device never synced",
        "batteryHealthPercentage: 140 outside 0..100",
        "freeStorageSpace larger than totalStorageSpace",
    ]
    assert next(e.ref for e in result.errors) == "managed_devices_pages.json:page 2:item 1"
    assert result.warnings == []
    for report in result.reports:
        assert decode_report(encode(report)) == report


def test_personal_data_never_leaves_the_bridge() -> None:
    outputs: list[str] = []
    for name, fmt in (
        ("managed_devices_pages.json", "graph-json"),
        ("battery_health_device_performance.json", "graph-json"),
        ("devices.csv", "csv"),
    ):
        result = _ingest(name, fmt)
        outputs += [encode(r).decode() for r in result.reports]
        outputs += [encode(i).decode() for i in result.inventory]
        outputs += list(dead_letters(result, AS_OF))
        outputs += [p.reason + json.dumps(p.excerpt) for p in result.errors + result.skipped]
    blob = "\n".join(outputs)
    for needle in PERSONAL:
        assert needle.lower() not in blob.lower(), needle


def test_pseudonyms_are_stable_and_depend_on_the_secret() -> None:
    a = pseudonymise("0f9d2e6a-2b7c-4a51-9d1e-6c1f0a3b8e11", SECRET)
    assert a == pseudonymise("0f9d2e6a-2b7c-4a51-9d1e-6c1f0a3b8e11", SECRET)
    assert a != pseudonymise("0f9d2e6a-2b7c-4a51-9d1e-6c1f0a3b8e11", b"other")
    assert a.startswith("mdm-")
    assert len(a) == 36
    # The same Intune device in JSON and CSV exports is one device downstream.
    json_ids = {r.device_id for r in _ingest("managed_devices_pages.json", "graph-json").reports}
    csv_ids = {r.device_id for r in _ingest("devices.csv", "csv").reports}
    assert a in json_ids & csv_ids


def test_reingesting_an_export_reproduces_the_same_records(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    with SeqStore(state) as store:
        first = [encode(r) for r in _ingest("managed_devices_pages.json", "graph-json", store).reports]
    with SeqStore(state) as store:
        again = [encode(r) for r in _ingest("managed_devices_pages.json", "graph-json", store).reports]
        later = _ingest("devices.csv", "csv", store).reports
    assert first == again
    phone = pseudonymise("0f9d2e6a-2b7c-4a51-9d1e-6c1f0a3b8e11", SECRET)
    assert [r.seq for r in later if r.device_id == phone] == [1], "a newer sync gets the next seq"


def test_battery_performance_rows_are_windows_laptops_stamped_as_of(tmp_path: Path) -> None:
    with SeqStore(tmp_path / "s.sqlite") as store:
        result = _ingest("battery_health_device_performance.json", "graph-json", store)
        replay = _ingest(
            "battery_health_device_performance.json", "graph-json", store, as_of=datetime(2025, 4, 1, tzinfo=UTC)
        )
    assert len(result.reports) == 2
    worn = result.reports[0]
    assert (worn.kind, worn.platform) == (DeviceKind.LAPTOP, Platform.WINDOWS)
    assert worn.battery is not None
    assert worn.battery.full_charge_capacity == 71.0
    assert worn.battery.runtime_full_minutes == 214.0
    assert worn.collected_at == AS_OF
    assert [e.reason for e in result.errors] == ["maxCapacityPercentage: missing or not measured"]
    assert [encode(r) for r in replay.reports] == [encode(r) for r in result.reports], "same content, same record"
    assert result.inventory[0].vendor == "LENOVO"


def test_csv_headers_are_matched_loosely_and_bad_rows_are_reported() -> None:
    result = _ingest("devices.csv", "csv")
    assert len(result.reports) == 2
    assert result.reports[1].collected_at == datetime(2025, 3, 5, 5, 0, tzinfo=UTC), "offsets normalised to UTC"
    assert [(e.ref, e.reason) for e in result.errors] == [
        ("devices.csv:line 4", "id: missing Intune device id"),
        ("devices.csv:line 5", "lastSyncDateTime: not an ISO 8601 timestamp"),
        ("devices.csv:line 6", "batteryHealthPercentage: not a finite number"),
        ("devices.csv:line 7", "4 columns, header has 13"),
    ]


def _read_graph(text: str) -> tuple[list[tuple[str, object]], list[str]]:
    reader = GraphJsonReader(io.StringIO(text), "x")
    return list(reader), reader.warnings


def test_paging_variants_and_incomplete_exports() -> None:
    pages = json.loads((FIXTURES / "managed_devices_pages.json").read_text())
    as_lines = "\n".join(json.dumps(p) for p in pages)
    items, warnings = _read_graph(as_lines)
    assert len(items) == 7
    assert warnings == []
    items, warnings = _read_graph(json.dumps(pages[0]))
    assert len(items) == 3
    assert warnings == ["x: last page has @odata.nextLink: the export is incomplete (more pages on the server)"]
    items, warnings = _read_graph('{"error": {"code": "Forbidden"}}\nnot json\n')
    assert [(ref, str(err)) for ref, err in items] == [
        ("x:page 1", "not a Graph collection page (no 'value' array)"),
        ("x:line 2:page 1", "expected a Graph page object, found other text; rest of the page skipped"),
    ]
    assert all(isinstance(err, RowError) for _, err in items)


def test_duplicate_rows_in_one_input_are_skipped() -> None:
    page = json.loads((FIXTURES / "managed_devices_pages.json").read_text())[0]
    page["value"].append(page["value"][0])
    page.pop("@odata.nextLink")
    result = ingest_text(json.dumps(page), "graph-json", SECRET, SeqStore(":memory:"), AS_OF)
    assert len(result.reports) == 3
    assert [s.reason for s in result.skipped] == ["duplicate of an earlier row in this input"]


def test_battery_performance_csv_is_recognised_by_its_columns() -> None:
    text = "Device Id,Model,Manufacturer,Max Capacity Percentage,Estimated Runtime In Minutes\nabc-1,Latitude 5440,Dell Inc.,66,180\n"
    result = ingest_text(text, "csv", SECRET, SeqStore(":memory:"), AS_OF)
    assert [(r.kind, r.battery.full_charge_capacity if r.battery else None) for r in result.reports] == [
        (DeviceKind.LAPTOP, 66.0)
    ]


def test_a_secret_is_required() -> None:
    with pytest.raises(ValueError, match="secret"):
        ingest([], b"", SeqStore(":memory:"), AS_OF)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(
    [
        "id",
        "deviceId",
        "operatingSystem",
        "deviceType",
        "chassisType",
        "lastSyncDateTime",
        "hardwareInformation",
        "totalStorageSpaceInBytes",
        "freeStorageSpaceInBytes",
        "maxCapacityPercentage",
        "estimatedRuntimeInMinutes",
        "manufacturer",
        "model",
    ]
)
_items = st.dictionaries(
    _fields, _json_values | st.sampled_from(["iOS", "Android", "iPhone", "2025-03-01T00:00:00Z"]), max_size=10
)


@given(items=st.lists(_items | _json_values, max_size=8))
def test_fuzzed_graph_items_never_crash_and_every_row_is_accounted_for(items: list[object]) -> None:
    text = json.dumps({"value": items})
    result = ingest_text(text, "graph-json", SECRET, SeqStore(":memory:"), AS_OF)
    assert result.rows == len(items)
    assert len(result.reports) + len(result.errors) + len(result.skipped) == result.rows
    for report in result.reports:
        assert decode_report(encode(report)) == report


@given(text=st.text(max_size=400))
def test_fuzzed_csv_never_crashes(text: str) -> None:
    result = ingest(read_csv(io.StringIO(text)), SECRET, SeqStore(":memory:"), AS_OF)
    assert len(result.reports) + len(result.errors) + len(result.skipped) == result.rows


@given(
    battery=st.one_of(st.text(max_size=8), st.floats(allow_nan=True), st.integers()),
    sync=st.one_of(st.text(max_size=30), st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())),
)
def test_fuzzed_csv_values_never_crash(battery: object, sync: str) -> None:
    header = "id,operatingSystem,deviceType,lastSyncDateTime,batteryHealthPercentage\n"
    line = ",".join(
        json.dumps(v) if not isinstance(v, str) else '"' + v.replace('"', '""') + '"'
        for v in ("abc", "iOS", "iPhone", sync, battery)
    )
    result = ingest(read_csv(io.StringIO(header + line + "\n")), SECRET, SeqStore(":memory:"), AS_OF)
    assert len(result.reports) + len(result.errors) + len(result.skipped) == result.rows


def test_cli_dry_run_reports_errors_and_writes_dead_letters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETPULSE_MDM__SECRET", "cli-secret")
    monkeypatch.setenv("FLEETPULSE_MDM__STATE_PATH", str(tmp_path / "state.sqlite"))
    dead = tmp_path / "dead.jsonl"
    result = CliRunner().invoke(
        app,
        ["mdm", "ingest", str(FIXTURES / "managed_devices_pages.json"), "--dry-run", "--dead-letter", str(dead)],
    )
    assert result.exit_code == 3, result.output
    assert "rows: 7, reports: 3, rejected: 3, skipped: 1" in result.output
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert next(d["reason"] for d in lines) == "lastSyncDateTime: device never synced"
    assert "city.example" not in dead.read_text()


def test_cli_refuses_to_run_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETPULSE_MDM__SECRET", raising=False)
    result = CliRunner().invoke(app, ["mdm", "ingest", str(FIXTURES / "devices.csv"), "--format", "csv", "--dry-run"])
    assert result.exit_code == 2
    assert "secret" in result.output


def test_two_stores_on_one_file_never_hand_out_a_seq_twice(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    first, second = SeqStore(state), SeqStore(state)
    a = first.assign("mdm-x", "f1", AS_OF)
    first.commit()
    b = second.assign("mdm-x", "f2", AS_OF)
    second.commit()
    again = second.assign("mdm-x", "f1", datetime(2030, 1, 1, tzinfo=UTC))
    second.close()
    first.close()
    assert (a[0], b[0]) == (0, 1)
    assert again == (0, AS_OF)


# --- hostile exports: each test performs the attack through the real CLI --------------------------


def _page_with(changes: dict[int, dict[str, object]]) -> dict[str, Any]:
    """The second fixture page (iPhone, Android, iPad and a PC) with the given item fields replaced."""
    page: dict[str, Any] = json.loads((FIXTURES / "managed_devices_pages.json").read_text())[1]
    page.pop("@odata.nextLink", None)
    for index, fields in changes.items():
        page["value"][index].update(fields)
    return page


def _good_phone(intune_id: str) -> dict[str, object]:
    return {
        "id": intune_id,
        "operatingSystem": "iOS",
        "deviceType": "iPhone",
        "lastSyncDateTime": "2025-03-05T07:10:00Z",
        "hardwareInformation": {"batteryHealthPercentage": 88},
    }


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, list[dict[str, Any]]]:
    """Run ``fleetpulse mdm ingest --dry-run``; exit code, output and the dead letters written."""
    monkeypatch.setenv("FLEETPULSE_MDM__SECRET", "cli-secret")
    monkeypatch.setenv("FLEETPULSE_MDM__STATE_PATH", str(tmp_path / "state.sqlite"))
    dead = tmp_path / "dead.jsonl"
    dead.unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["mdm", "ingest", *args, "--dry-run", "--dead-letter", str(dead)])
    letters = [json.loads(line) for line in dead.read_text().splitlines()] if dead.exists() else []
    return result.exit_code, result.output, letters


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_an_export_with_a_byte_order_mark_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    export = tmp_path / "bom.json"
    export.write_bytes(json.dumps({"value": [_good_phone("a"), _good_phone("b")]}).encode(encoding))
    code, output, _ = _cli(tmp_path, monkeypatch, str(export))
    assert code == 0, output
    assert "rows: 2, reports: 2, rejected: 0" in output


def test_a_truncated_export_keeps_its_complete_rows_and_fails_with_the_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = json.dumps({"value": [_good_phone("a"), _good_phone("b"), _good_phone("c")]}, indent=2)
    export = tmp_path / "cut.json"
    export.write_text(text[: text.index('"c"') + 2])
    code, output, letters = _cli(tmp_path, monkeypatch, str(export))
    assert code == 3, output
    assert "rows: 3, reports: 2, rejected: 1" in output
    assert "rejected cut.json:line 21:page 1:item 2: truncated JSON: the input ends inside a value" in output
    assert [d["ref"] for d in letters] == ["cut.json:line 21:page 1:item 2"]


def test_a_broken_item_of_a_pretty_printed_export_costs_only_that_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = json.dumps({"value": [_good_phone(name) for name in "abcd"]}, indent=4)
    export = tmp_path / "pretty.json"
    export.write_text(text.replace('"b",', '"b" "garbage",').replace('"c",', '"' + "c" * 2_000_000 + '",'))
    code, output, letters = _cli(tmp_path, monkeypatch, str(export))
    assert code == 3, output
    assert "rows: 4, reports: 2, rejected: 2" in output, "items after the broken ones are read"
    assert [(d["ref"], d["reason"]) for d in letters] == [
        ("pretty.json:line 12:page 1:item 1", "invalid JSON; item skipped"),
        ("pretty.json:line 21:page 1:item 2", "a JSON value larger than 1024 KiB; item skipped"),
    ]


def test_a_broken_page_of_a_page_per_line_export_costs_only_that_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = [json.dumps({"value": [_good_phone(name)]}) for name in "abc"]
    export = tmp_path / "pages.json"
    export.write_text(
        "\n".join([pages[0], pages[1][:25] + "\x00garbage", pages[2], '{"error": {"code": "Forbidden"}}'])
    )
    code, output, letters = _cli(tmp_path, monkeypatch, str(export))
    assert code == 3, output
    assert "rows: 4, reports: 2, rejected: 2" in output
    assert [(d["ref"], d["reason"]) for d in letters] == [
        ("pages.json:line 2:page 2:item 0", "invalid JSON; rest of the page skipped"),
        ("pages.json:page 4", "not a Graph collection page (no 'value' array)"),
    ]


def test_a_200_kb_csv_field_costs_only_its_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header, *rows = (FIXTURES / "devices.csv").read_text().splitlines()
    bloated = rows[0].replace("iPhone 13", "M" * 200_000).replace("0f9d2e6a", "1f9d2e6a")
    export = tmp_path / "big.csv"
    export.write_text("\n".join([header, bloated, *rows[:2]]) + "\n")
    code, output, letters = _cli(tmp_path, monkeypatch, str(export), "--format", "csv")
    assert code == 3, output
    assert "rows: 3, reports: 2, rejected: 1" in output, "the rows after the long field are kept"
    assert [(d["ref"], d["reason"]) for d in letters] == [("big.csv:line 2", "line longer than 65536 characters")]


def test_a_nul_character_costs_only_its_row_on_every_python() -> None:
    """Python 3.10's csv module refuses a line with NUL and 3.11's reads it through: the bridge refuses it on both."""
    header, *rows = (FIXTURES / "devices.csv").read_text().splitlines()
    nul_field = rows[0].replace("iPhone 13", "iPhone\x0013")
    nul_in_quotes = rows[1].replace(",", ',"\x00",', 1)
    text = "\n".join([header, nul_field, nul_in_quotes, *rows[2:]]) + "\n"
    clean = list(read_csv(io.StringIO("\n".join([header, *rows[2:]]) + "\n")))
    read = list(read_csv(io.StringIO(text)))
    assert [(ref, str(item)) for ref, item in read[:2]] == [
        ("input:line 2", "line contains NUL"),
        ("input:line 3", "line contains NUL"),
    ]
    assert all(isinstance(item, RowError) for _, item in read[:2])
    assert [repr(item) for _, item in read[2:]] == [repr(item) for _, item in clean]
    header_nul = list(read_csv(io.StringIO(header.replace(",", ",\x00", 1) + "\n" + rows[0] + "\n")))
    assert [(ref, str(item)) for ref, item in header_nul] == [
        ("input:line 1", "unreadable CSV header (line contains NUL)")
    ]


def test_a_row_of_many_long_multi_line_fields_costs_only_that_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header, *rows = (FIXTURES / "devices.csv").read_text().splitlines()
    quoted = ",".join('"' + ("x" * 60_000 + "\n") * 2 + '"' for _ in range(13))  # 13 columns of 120 KB
    export = tmp_path / "tall.csv"
    export.write_text("\n".join([header, quoted, *rows[:2]]) + "\n")
    code, output, letters = _cli(tmp_path, monkeypatch, str(export), "--format", "csv")
    assert code == 3, output
    assert "rows: 3, reports: 2, rejected: 1" in output
    assert [(d["ref"], d["reason"]) for d in letters] == [
        ("tall.csv:line 2", "row longer than 1048576 characters (at line 19)")
    ]


@pytest.mark.parametrize("fmt", ["graph-json", "csv"])
def test_a_5000_digit_number_is_a_row_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    digits = "9" * 5000
    if fmt == "csv":
        export = tmp_path / "n.csv"
        export.write_text(
            "id,operatingSystem,deviceType,lastSyncDateTime,batteryChargeCycles\n"
            f"a,iOS,iPhone,2025-03-05T07:10:00Z,{digits}\nb,iOS,iPhone,2025-03-05T07:10:00Z,12\n"
        )
    else:
        export = tmp_path / "n.json"
        text = json.dumps({"value": [{**_good_phone("a"), "totalStorageSpaceInBytes": 1}, _good_phone("b")]})
        export.write_text(text.replace('"totalStorageSpaceInBytes": 1', f'"totalStorageSpaceInBytes": {digits}'))
    code, output, letters = _cli(tmp_path, monkeypatch, str(export), "--format", fmt)
    assert code == 3, output
    assert "rows: 2, reports: 1, rejected: 1" in output
    assert "a number of more than 20 digits" in letters[0]["reason"]
    assert digits[:30] not in output + json.dumps(letters)


def test_personal_data_in_allow_listed_fields_never_reaches_a_dead_letter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = {
        "operatingSystem": "erika.mustermann@city.example",
        "chassisType": "Erika Mustermann",
        "lastSyncDateTime": "+49 30 1234567",
        "totalStorageSpaceInBytes": 356938035643809,  # an IMEI where a byte count belongs
        "freeStorageSpaceInBytes": "35 391805 123456 7",
    }
    page = _page_with(
        {
            1: planted,  # android, never synced: rejected
            2: {"deviceType": "F2LXK1ABCD12", "hardwareInformation": {"batteryHealthPercentage": 353918051234567}},
        }
    )
    export = tmp_path / "pii.json"
    export.write_text(json.dumps(page))
    code, output, letters = _cli(tmp_path, monkeypatch, str(export))
    assert code == 3, output
    blob = (output + json.dumps(letters)).lower()
    for needle in [*PERSONAL, "356938035643809", "3569380", "353918051234567", "3539180", "30 1234567"]:
        assert needle.lower() not in blob, needle
    first, second = (d["excerpt"] for d in letters[:2])
    assert first["withheld"] == {
        name: "value withheld: not a recognised non-personal value"
        for name in ("operatingSystem", "chassisType", "lastSyncDateTime", "freeStorageSpaceInBytes")
    }
    assert first["totalStorageSpaceInBytes"] == 3.6e14, "a byte count keeps only its magnitude"
    assert first["deviceType"] == "androidEnterprise", "values that pass their field's check are kept"
    assert letters[1]["reason"] == "batteryHealthPercentage: a number of 15 digits outside 0..100"
    assert second["withheld"] == {
        "deviceType": "value withheld: not a recognised non-personal value",
        "batteryHealthPercentage": "value withheld: not a recognised non-personal value",
    }


def test_an_unreadable_file_is_an_error_and_the_other_files_are_still_read(tmp_path: Path) -> None:
    unreadable = tmp_path / "a-directory.json"
    unreadable.mkdir()
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"value": [_good_phone("a")]}))
    published: list[HealthReport] = []
    with SeqStore(":memory:") as store:
        summary = run_ingest(
            [unreadable, good], "graph-json", SECRET, store, AS_OF, lambda _inv, reports: published.extend(reports)
        )
    assert (summary.rows, summary.reports, summary.rejected) == (1, 1, 1)
    assert summary.first_problems[0].ref == "a-directory.json"
    assert summary.first_problems[0].reason.startswith("unreadable: ")
    assert len(published) == 1


_GRAPH_PIECES = st.sampled_from(
    [
        '{"value": [',
        "]}",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        '"value"',
        '"@odata.context"',
        '"x"',
        "\n",
        "\n    {",
        "\n    ",
        '{"id": "a", "operatingSystem": "iOS", "lastSyncDateTime": "2025-03-05T07:10:00Z"}',
        "1" * 30,
        "-",
        "\\",
        '"',
        "\ufeff",
        "nul",
        "true",
        "1e999",
    ]
)


@given(pieces=st.lists(_GRAPH_PIECES | st.text(max_size=8), max_size=40))
@settings(max_examples=300, deadline=None)
def test_fuzzed_json_streams_never_crash_and_every_problem_has_a_location(pieces: list[str]) -> None:
    text = "".join(pieces)
    reader = GraphJsonReader(io.StringIO(text), "f")
    rows = list(reader)
    result = ingest(iter(rows), SECRET, SeqStore(":memory:"), AS_OF)
    assert result.rows == len(rows)
    assert all(ref.startswith("f:") for ref, _ in rows)
    assert len(result.reports) + len(result.errors) + len(result.skipped) == result.rows


def test_a_sync_time_past_the_last_date_costs_only_its_row(tmp_path: Path) -> None:
    """Before: 9999-12-31T23:59:59-01:00 parsed, then overflowed in UTC and aborted the whole run."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    hostile = [
        {**_good_phone("late"), "lastSyncDateTime": "9999-12-31T23:59:59-01:00"},
        {**_good_phone("surrogate"), "id": "\ud800"},
    ]
    first.write_text(json.dumps({"value": [_good_phone("a"), *hostile, _good_phone("b")]}))
    second.write_text(json.dumps({"value": [_good_phone("c")]}))
    published: list[HealthReport] = []
    with SeqStore(":memory:") as store:
        summary = run_ingest(
            [first, second], "graph-json", SECRET, store, AS_OF, lambda _inv, reports: published.extend(reports)
        )
    assert (summary.rows, summary.reports, summary.rejected) == (5, 3, 2)
    assert len(published) == 3
    assert [(p.ref, p.reason) for p in summary.first_problems] == [
        ("a.json:page 1:item 1", "lastSyncDateTime: outside the range of dates"),
        ("a.json:page 1:item 2", "id: not valid Unicode"),
    ]


def test_an_unforeseen_exception_refuses_its_row_by_type_and_the_rest_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check the bridge lacks must cost one row, reported, never the export or a quote of the row."""
    real = mdm.map_managed_device

    def fragile(item: Any) -> Any:
        if item.get("id") == "odd":
            raise KeyError("muster@city.example")
        return real(item)

    monkeypatch.setattr(mdm, "map_managed_device", fragile)
    text = json.dumps({"value": [_good_phone("a"), _good_phone("odd"), _good_phone("b")]})
    result = ingest_text(text, "graph-json", SECRET, SeqStore(":memory:"), AS_OF, "f")
    assert len(result.reports) == 2
    assert [(p.ref, p.reason) for p in result.errors] == [
        ("f:page 1:item 1", "refused: unexpected KeyError while mapping the row")
    ]
    assert "muster@" not in "".join(dead_letters(result, AS_OF))


def test_a_stray_quote_costs_only_its_own_row() -> None:
    """An unterminated quote would take every following line into one field until csv's field limit: about 2,500
    phones of a daily export lost under one row error. The row is ended and refused, and the lines after its
    first are read again as rows of their own."""
    header = "id,operatingSystem,deviceType,lastSyncDateTime,batteryHealthPercentage,model\n"
    rows = [f"dev{i},iOS,iPhone,2026-10-30T10:00:00Z,90,iPhone 12\n" for i in range(5_000)]
    rows[2] = 'dev2,iOS,iPhone,2026-10-30T10:00:00Z,90,"iPhone 12\n'
    read = list(read_csv(io.StringIO(header + "".join(rows))))
    errors = [(ref, str(item)) for ref, item in read if isinstance(item, RowError)]
    assert errors == [("input:line 4", f"a row over more than {mdm.MAX_CSV_ROW_LINES} lines (a stray quote?)")]
    ids = [item["id"] for _, item in read if not isinstance(item, RowError)]
    assert ids == [f"dev{i}" for i in range(5_000) if i != 2]
    assert [ref for ref, _ in read][3:5] == ["input:line 5", "input:line 6"], "lines numbered as in the file"


def test_a_quoted_field_over_a_few_lines_is_still_one_field() -> None:
    header = "id,notes\n"
    text = header + 'a,"one\ntwo\nthree"\nb,plain\n'
    assert [item for _, item in read_csv(io.StringIO(text))] == [
        {"id": "a", "notes": "one\ntwo\nthree"},
        {"id": "b", "notes": "plain"},
    ]
