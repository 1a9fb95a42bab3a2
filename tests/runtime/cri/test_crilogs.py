"""The CRI log format, parsed: streams, partial records joined, times to the microsecond."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from shoal.interfaces import Container, InvalidInput, PodSpec, Port
from shoal.runtime.cri._crilogs import CriLogParser, parse_cri_time, read_cri_log
from shoal.runtime.cri._cripod import sandbox_config

pytestmark = pytest.mark.anyio


def test_times_keep_microseconds_and_honour_offsets() -> None:
    assert parse_cri_time("2016-10-06T00:17:09.669794202Z") == datetime(
        2016, 10, 6, 0, 17, 9, 669794, tzinfo=UTC
    )
    assert parse_cri_time("2016-10-06T02:17:09.5+02:00") == datetime(
        2016, 10, 6, 0, 17, 9, 500000, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        parse_cri_time("yesterday")


def test_partial_records_are_joined_per_stream() -> None:
    parser = CriLogParser()
    records = [
        b"2024-01-01T00:00:00.000000001Z stdout P first ",
        b"2024-01-01T00:00:00.000000002Z stderr F an error",
        b"2024-01-01T00:00:00.000000003Z stdout P half, ",
        b"2024-01-01T00:00:00.000000004Z stdout F:x done",
        b"2024-01-01T00:00:00.000000005Z stdout F ",
        b"not a record",
    ]
    lines = [line for record in records if (line := parser.feed(record)) is not None]
    assert [(line.stream, line.line) for line in lines] == [
        ("stderr", "an error"),
        ("stdout", "first half, done"),
        ("stdout", ""),
    ]
    assert lines[1].time == parse_cri_time("2024-01-01T00:00:00.000000001Z")  # its first part's


async def test_history_honours_since_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "main.log"
    log.write_text(
        "".join(f"2024-01-01T00:00:0{n}.000000000Z stdout F line {n}\n" for n in range(5))
    )

    async def finished() -> bool:
        await anyio.lowlevel.checkpoint()
        return True

    async def read(tail: int | None, since: datetime | None) -> list[str]:
        lines = read_cri_log(log, finished, follow=False, tail=tail, since=since)
        return [line.line async for line in lines]

    assert await read(tail=None, since=None) == [f"line {n}" for n in range(5)]
    assert await read(tail=2, since=None) == ["line 3", "line 4"]
    assert await read(tail=0, since=None) == []
    since = parse_cri_time("2024-01-01T00:00:03Z")
    assert await read(tail=None, since=since) == ["line 3", "line 4"]
    assert await read(tail=None, since=None) == await read(tail=10, since=None)
    missing = read_cri_log(tmp_path / "none.log", finished, follow=True, tail=None, since=None)
    assert [line async for line in missing] == []  # not written yet, and finished


def test_host_networking_refuses_a_host_port_other_than_the_container_port() -> None:
    web = Container(name="web", image="busybox", ports=[Port(container_port=80, host_port=8080)])
    pod = PodSpec(uid="u1", name="web-1", namespace="default", workload="web", containers=[web])
    with pytest.raises(InvalidInput, match="host networking cannot publish"):
        sandbox_config(
            pod,
            owner="n1",
            log_directory=Path("/tmp/logs"),
            cgroup_parent="/shoal-cri",
            host_network=True,
            host_ip="127.0.0.1",
        )
    config = sandbox_config(
        pod,
        owner="n1",
        log_directory=Path("/tmp/logs"),
        cgroup_parent="/shoal-cri",
        host_network=False,
        host_ip="127.0.0.1",
    )
    (mapping,) = config.port_mappings
    assert (mapping.container_port, mapping.host_port, mapping.host_ip) == (80, 8080, "127.0.0.1")
    assert config.labels["io.shoal.pod-uid"] == "u1"
    assert "files" not in config.annotations["io.shoal.pod-spec"]  # no Secret data in metadata
