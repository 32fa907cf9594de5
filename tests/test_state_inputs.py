"""Opening captures: arguments, bad segments, several hosts, the state cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from analyzer.errors import TraceError
from analyzer.state import open_captures, parse_time
from analyzer.state.cache import CACHE_DIR_NAME
from tests.state_builder import CaptureBuilder, Proc


def small_capture(directory: Path, host: str = "h1", segments: int = 3) -> CaptureBuilder:
    """`segments` segments; in each, bash (pid 700, forked in the first) opens /tmp/segN."""
    b = CaptureBuilder(directory, host=host)
    init, shell = Proc(1, 0, "systemd"), Proc(600, 1, "bash")
    bash = None
    for n in range(segments):
        b.start_segment()
        b.snap_proc(init, ["/sbin/init"], "/sbin/init", "/")
        b.snap_proc(shell, ["-bash"], "/usr/bin/bash", "/root")
        if bash is None:
            bash = b.fork(shell, 700)
            b.execve(bash, ["python3", "x.py"], "/usr/bin/python3.11", comm="python3")
        else:
            b.snap_proc(bash, ["python3", "x.py"], "/usr/bin/python3.11", "/root")
        b.evt(bash, "openat", res=3, dirfd=-100, path=f"/tmp/seg{n}", flags=0)
        b.evt(bash, "close", res=0, fd=3)
        b.finish_segment()
    return b


def opened_paths(cs) -> list[str]:
    return [r[0] for r in cs.con.execute(
        "SELECT \"fd.name\" FROM events WHERE syscall = 'openat' ORDER BY evt_num").fetchall()]


def test_directory_manifest_file_and_glob_arguments(tmp_path):
    b = small_capture(tmp_path / "cap")
    (b.directory / "manifest.json").write_text("{}")
    segs = sorted(b.directory.glob("seg-*.parquet"))
    for args in ([str(b.directory)], [str(b.directory / "manifest.json")],
                 [str(s) for s in segs], [str(b.directory / "seg-*.parquet")]):
        with open_captures(args) as cs:
            assert opened_paths(cs) == ["/tmp/seg0", "/tmp/seg1", "/tmp/seg2"], args
            assert cs.hosts == ["h1"]


def test_missing_path_and_empty_capture_are_clear_errors(tmp_path):
    with pytest.raises(TraceError, match="no such capture"):
        open_captures([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TraceError, match="empty capture"):
        open_captures([str(tmp_path / "empty")])
    with pytest.raises(TraceError, match="no file matches"):
        open_captures([str(tmp_path / "empty" / "seg-*.parquet")])


def test_truncated_segment_is_skipped_with_a_warning(tmp_path):
    b = small_capture(tmp_path / "cap")
    middle = sorted(b.directory.glob("seg-*.parquet"))[1]
    middle.write_bytes(middle.read_bytes()[: middle.stat().st_size // 2])
    with open_captures([str(b.directory)]) as cs:
        assert len(cs.warnings) == 1 and middle.name in cs.warnings[0]
        assert opened_paths(cs) == ["/tmp/seg0", "/tmp/seg2"]
        # the process born in segment 1 still resolves in segment 3
        assert cs.con.execute(
            "SELECT DISTINCT \"proc.cmdline\", \"proc.pname\" FROM events WHERE pid = 700 AND syscall = 'openat'"
        ).fetchall() == [
            ("python3 x.py", "bash")]


def test_segment_with_corrupt_pages_is_skipped_with_a_warning(tmp_path):
    b = small_capture(tmp_path / "cap")
    middle = sorted(b.directory.glob("seg-*.parquet"))[1]
    data = bytearray(middle.read_bytes())
    for i in range(8, len(data) // 2):  # the footer stays readable, the column chunks do not
        data[i] = 0xA5
    middle.write_bytes(bytes(data))
    with open_captures([str(b.directory)]) as cs:
        assert any(middle.name in w for w in cs.warnings)
        assert opened_paths(cs) == ["/tmp/seg0", "/tmp/seg2"]


def test_every_segment_corrupt_is_an_error(tmp_path):
    b = small_capture(tmp_path / "cap", segments=1)
    seg = next(b.directory.glob("seg-*.parquet"))
    seg.write_bytes(b"PAR1 not really")
    with pytest.raises(TraceError, match="no readable segment"):
        open_captures([str(b.directory)])


def test_deleted_first_segment_resolves_through_the_next_snapshot(tmp_path):
    b = small_capture(tmp_path / "cap")
    sorted(b.directory.glob("seg-*.parquet"))[0].unlink()
    with open_captures([str(b.directory)]) as cs:
        rows = cs.con.execute(
            'SELECT "proc.cmdline", "proc.pname", "proc.cwd", _anc_pid FROM events WHERE pid = 700').fetchall()
        assert len(rows) == 4
        assert {(*r[:3], tuple(r[3])) for r in rows} == {("python3 x.py", "bash", "/root/", (700, 600, 1))}


def test_several_hosts_together(tmp_path):
    small_capture(tmp_path / "a", host="alpha")
    small_capture(tmp_path / "b", host="beta", segments=1)
    with open_captures([str(tmp_path / "a"), str(tmp_path / "b")]) as cs:
        assert cs.hosts == ["alpha", "beta"]
        counts = cs.con.execute(
            "SELECT _host, count(*), count(DISTINCT _proc_key) FROM events GROUP BY 1 ORDER BY 1").fetchall()
        # bash (snapshot), its child before and after exec
        assert counts == [("alpha", 9, 3), ("beta", 5, 3)]
        keys = cs.con.execute("SELECT count(*), count(DISTINCT _proc_key) FROM processes").fetchall()[0]
        assert keys[0] == keys[1]


def test_cache_is_private_reused_and_invalidated(tmp_path):
    b = small_capture(tmp_path / "cap", segments=2)
    with open_captures([str(b.directory)]):
        pass
    cache_dir = b.directory / CACHE_DIR_NAME
    files = list(cache_dir.glob("state-*.duckdb"))
    assert len(files) == 1
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    mtime = files[0].stat().st_mtime_ns
    with open_captures([str(b.directory)]):
        pass
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rebuilt
    # a new segment (rotation) changes the key: rebuilt, the stale file removed
    bash = Proc(700, 600, "python3")
    b.start_segment()
    b.snap_proc(bash, ["python3", "x.py"], "/usr/bin/python3.11", "/root")
    b.evt(bash, "openat", res=3, dirfd=-100, path="late", flags=0)
    b.finish_segment()
    with open_captures([str(b.directory)]) as cs:
        assert opened_paths(cs)[-1] == "/root/late"
    assert [f.name for f in cache_dir.glob("state-*.duckdb")] != [files[0].name]
    assert len(list(cache_dir.glob("state-*.duckdb"))) == 1
    # touching a segment (same name, new mtime) also invalidates
    seg = sorted(b.directory.glob("seg-*.parquet"))[0]
    os.utime(seg, ns=(seg.stat().st_atime_ns, seg.stat().st_mtime_ns + 10**9))
    before = {f.name for f in cache_dir.glob("state-*.duckdb")}
    with open_captures([str(b.directory)]):
        pass
    assert {f.name for f in cache_dir.glob("state-*.duckdb")} != before


def test_hunting_some_segments_keeps_the_whole_captures_cache(tmp_path):
    b = small_capture(tmp_path / "cap", segments=2)
    cache_dir = b.directory / CACHE_DIR_NAME
    with open_captures([str(b.directory)]):
        pass
    (whole,) = cache_dir.glob("state-*.duckdb")
    first = sorted(b.directory.glob("seg-*.parquet"))[0]
    with open_captures([str(first)]):  # a glob or file naming one segment: a cache of its own
        pass
    assert whole in set(cache_dir.glob("state-*.duckdb"))
    assert len(list(cache_dir.glob("state-*.duckdb"))) == 2
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in cache_dir.iterdir() if f.is_file())
    # the whole capture hunted again: its cache reused (caches are only removed after a build)
    mtime = whole.stat().st_mtime_ns
    with open_captures([str(b.directory)]):
        pass
    assert whole.stat().st_mtime_ns == mtime
    # a rotation: the new build read every segment both caches read, so both are superseded
    b.start_segment()
    b.evt(Proc(700, 600, "python3"), "close", res=0, fd=3)
    b.finish_segment()
    with open_captures([str(b.directory)]):
        pass
    (latest,) = cache_dir.glob("state-*.duckdb")
    assert latest != whole
    assert [f.name for f in cache_dir.glob("*.inputs")] == [latest.name + ".inputs"]


def test_parse_time():
    assert parse_time("2027-01-15T08:00:00Z") == 1_800_000_000_000_000_000
    assert parse_time("1800000000") == 1_800_000_000_000_000_000
    assert parse_time("1800000000.5") == 1_800_000_000_500_000_000
    assert parse_time("1800000000000000000") == 1_800_000_000_000_000_000
    assert parse_time("2026-11-27T10:00:00") == parse_time("2026-11-27T10:00:00+00:00")
    with pytest.raises(TraceError):
        parse_time("yesterday")
