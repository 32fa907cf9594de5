"""Falco's alert formats, byte for byte, rendered from a real DuckDB table."""

from __future__ import annotations

import json

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyzer.fields.spec import ArgKind, FieldSpec, FieldType
from analyzer.output import (
    Alert,
    OutputField,
    OutputFormatError,
    build_alert,
    dump_json,
    falco_time,
    iso8601_utc,
    parse_output,
    render_text_value,
)

# A hand-made catalog in the shape of analyzer/fields: the formatter only
# needs names, types and argument kinds.
CATALOG = {
    spec.name: spec
    for spec in (
        FieldSpec("evt.time", FieldType.STRING, "NULL"),
        FieldSpec("evt.type", FieldType.STRING, '"evt.type"'),
        FieldSpec("evt.rawres", FieldType.INT, '"evt.rawres"'),
        FieldSpec("evt.arg", FieldType.STRING, "_evt_args[{arg}]", arg=ArgKind.REQUIRED),
        FieldSpec("proc.name", FieldType.STRING, '"proc.name"'),
        FieldSpec("proc.pname", FieldType.STRING, '"proc.pname"'),
        FieldSpec("proc.cmdline", FieldType.STRING, '"proc.cmdline"'),
        FieldSpec("proc.aname", FieldType.STRING, "_anc_name[2:]", arg=ArgKind.OPTIONAL, any_element=True,
                  arg_sql="_anc_name[{index} + 1]", arg_is_index=True),
        FieldSpec("proc.pid", FieldType.INT, '"proc.pid"'),
        FieldSpec("user.name", FieldType.STRING, '"user.name"'),
        FieldSpec("user.uid", FieldType.INT, '"user.uid"'),
        FieldSpec("fd.name", FieldType.STRING, '"fd.name"'),
        FieldSpec("fd.rport", FieldType.PORT, '"fd.rport"'),
        FieldSpec("fd.connected", FieldType.BOOL, '"fd.connected"'),
        FieldSpec("fd.types", FieldType.STRING, "_fd_types", arg=ArgKind.OPTIONAL, is_list=True),
        FieldSpec("container.id", FieldType.STRING, '"container.id"'),
        FieldSpec("container.name", FieldType.STRING, '"container.name"'),
    )
}

TS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z


def test_evt_time_is_libsinsp_clock_in_the_given_offset():
    assert falco_time(TS, 0) == "22:13:20.123456789"
    assert falco_time(TS, 3600) == "23:13:20.123456789"
    assert falco_time(TS, 2 * 3600) == "00:13:20.123456789"  # wraps past midnight
    assert falco_time(TS, -5 * 3600) == "17:13:20.123456789"
    assert falco_time(1_700_000_000_000_000_007, 0) == "22:13:20.000000007"


def test_json_time_is_utc_rfc3339_with_nanoseconds():
    assert iso8601_utc(TS) == "2023-11-14T22:13:20.123456789Z"
    assert iso8601_utc(0) == "1970-01-01T00:00:00.000000000Z"


def test_fields_with_arguments_keep_their_spelling_as_keys():
    fmt = parse_output("a=%proc.aname[2] f=%evt.arg.flags n=%evt.arg[0] t=%fd.types", CATALOG)
    assert [(f.key, f.spec.name, f.arg) for f in fmt.fields] == [
        ("proc.aname[2]", "proc.aname", "2"),
        ("evt.arg.flags", "evt.arg", "flags"),
        ("evt.arg[0]", "evt.arg", "0"),
        ("fd.types", "fd.types", None),
    ]


def test_field_names_end_where_libsinsp_ends_them():
    fmt = parse_output("x=%proc.namex (%fd.name) %container.id:%container.name. end%user.uid", CATALOG)
    assert [f.key for f in fmt.fields] == ["proc.name", "fd.name", "container.id", "container.name", "user.uid"]
    values = {"proc.name": "cat", "fd.name": "/etc/shadow", "container.id": "host", "container.name": "host",
              "user.uid": 0}
    assert fmt.render(values, TS, 0) == "x=catx (/etc/shadow) host:host. end0"


def test_star_prefix_and_container_info_follow_falco():
    fmt = parse_output("*shell %container.info", CATALOG)
    assert fmt.text == "shell container_id=%container.id container_name=%container.name"
    assert fmt.render({}, TS, 0) == "shell container_id=<NA> container_name=<NA>"


def test_width_pads_and_cuts_like_libsinsp():
    fmt = parse_output("[%6proc.name][%2proc.pname]", CATALOG)
    assert fmt.render({"proc.name": "cat", "proc.pname": "bash"}, TS, 0) == "[cat   ][ba]"


@pytest.mark.parametrize(
    ("text", "message"),
    [("oops %", "cannot end with %"), ("%nosuch.field here", "unknown field"), ("%evt.arg here", "needs an argument"),
     ("100% sure", "unknown field")],
)
def test_formats_libsinsp_refuses_are_errors(text, message):
    with pytest.raises(OutputFormatError, match=message):
        parse_output(text, CATALOG)


def test_multi_valued_field_without_index_prints_its_first_value():
    fmt = parse_output("a=%proc.aname p=%proc.aname[1]", CATALOG)
    values = {"proc.aname": ["bash", "sshd", "systemd"], "proc.aname[1]": "bash"}
    assert fmt.render(values, TS, 0) == "a=bash p=bash"
    assert fmt.json_fields(values, TS) == {"proc.aname": "bash", "proc.aname[1]": "bash"}
    assert fmt.render({"proc.aname": []}, TS, 0) == "a=<NA> p=<NA>"


def test_values_render_like_libsinsp_tostring():
    fmt = parse_output("%proc.name %user.uid %fd.connected %fd.rport %fd.types %proc.pname %evt.time", CATALOG)
    values = {"proc.name": "nc", "user.uid": 1000, "fd.connected": True, "fd.rport": 4444,
              "fd.types": ["ipv4", "file"], "proc.pname": None}
    assert fmt.render(values, TS, 0) == "nc 1000 true 4444 (ipv4,file) <NA> 22:13:20.123456789"


SENSITIVE = (
    "Sensitive file opened for reading by non-trusted program (file=%fd.name gparent=%proc.aname[2] "
    "ggparent=%proc.aname[3] evt_type=%evt.type user=%user.name user_uid=%user.uid process=%proc.name "
    "proc_pid=%proc.pid connected=%fd.connected)"
)


def _alert(values: dict[str, object], tags=("mitre_credential_access", "T1555", "filesystem")) -> Alert:
    return build_alert(
        rule="Read sensitive file untrusted",
        priority="Warning",
        source="syscall",
        tags=tags,
        output=parse_output(SENSITIVE, CATALOG),
        values=values,
        ts_ns=TS,
        hostname="web-01",
        utc_offset=0,
    )


VALUES = {"fd.name": "/etc/shadow", "proc.aname[2]": "sshd", "proc.aname[3]": None, "evt.type": "openat",
          "user.name": "root", "user.uid": 0, "proc.name": "cat", "proc.pid": 4242, "fd.connected": False}


def test_text_alert_is_falcos_line():
    assert _alert(VALUES).output == (
        "22:13:20.123456789: Warning Sensitive file opened for reading by non-trusted program "
        "(file=/etc/shadow gparent=sshd ggparent=<NA> evt_type=openat user=root user_uid=0 process=cat "
        "proc_pid=4242 connected=false)"
    )


def test_json_alert_is_falcos_json_output_line():
    line = _alert(VALUES).to_json()
    assert line == (
        '{"hostname":"web-01","output":"22:13:20.123456789: Warning Sensitive file opened for reading by '
        "non-trusted program (file=/etc/shadow gparent=sshd ggparent=<NA> evt_type=openat user=root user_uid=0 "
        'process=cat proc_pid=4242 connected=false)","output_fields":{"evt.time":1700000000123456789,'
        '"evt.type":"openat","fd.connected":false,"fd.name":"/etc/shadow","proc.aname[2]":"sshd",'
        '"proc.aname[3]":null,"proc.name":"cat","proc.pid":4242,"user.name":"root","user.uid":0},'
        '"priority":"Warning","rule":"Read sensitive file untrusted","source":"syscall",'
        '"tags":["T1555","filesystem","mitre_credential_access"],"time":"2023-11-14T22:13:20.123456789Z"}'
    )


def test_json_escapes_like_nlohmann():
    alert = _alert({**VALUES, "fd.name": 'a"b\\c\n\t\x01\x7f/é', "proc.name": "\udcff"})
    parsed = json.loads(alert.to_json())
    assert parsed["output_fields"]["fd.name"] == 'a"b\\c\n\t\x01\x7f/é'
    assert parsed["output_fields"]["proc.name"] == "\ufffd"
    assert '"fd.name":"a\\"b\\\\c\\n\\t\\u0001\x7f/é"' in alert.to_json()


def test_alert_renders_from_a_real_duckdb_events_row():
    con = duckdb.connect()
    con.execute(
        'CREATE TABLE events ("fd.name" VARCHAR, _anc_name VARCHAR[], "evt.type" VARCHAR, "user.name" VARCHAR, '
        '"user.uid" BIGINT, "proc.name" VARCHAR, "proc.pid" BIGINT, "fd.connected" BOOLEAN, ts BIGINT)'
    )
    con.execute(
        "INSERT INTO events VALUES ('/etc/shadow', ['cat', 'python3', 'sshd'], 'openat', 'root', 0, 'cat', 4242, "
        "false, ?)",
        [TS],
    )
    fmt = parse_output(SENSITIVE, CATALOG)
    exprs = {f.key: f.spec.arg_sql.format(index=int(f.arg)) if f.arg else f.spec.sql for f in fmt.fields}
    row = con.execute("SELECT " + ", ".join(f"{sql} AS \"{key}\"" for key, sql in exprs.items()) + " FROM events")
    cols = [d[0] for d in row.description]
    values = dict(zip(cols, row.fetchall()[0]))
    assert _alert(values).output == _alert(VALUES).output


_literal = st.text(st.characters(blacklist_characters="%", blacklist_categories=("Cs",)), max_size=20)
_BY_TYPE = {
    FieldType.STRING: st.text(max_size=15),
    FieldType.INT: st.integers(-(2**40), 2**40),
    FieldType.PORT: st.integers(0, 65535),
    FieldType.BOOL: st.booleans(),
}
_PLAIN = sorted(name for name, spec in CATALOG.items() if spec.arg is ArgKind.NONE and name != "evt.time")


@st.composite
def _part(draw):
    name = draw(st.sampled_from(_PLAIN))
    return draw(_literal), name, draw(st.one_of(st.none(), _BY_TYPE[CATALOG[name].type]))


@given(st.lists(_part(), min_size=1, max_size=5), _literal)
def test_render_is_literals_and_values_in_order(parts, tail):
    text = "".join(f"{lit} %{name} " for lit, name, _ in parts) + tail
    fmt = parse_output(text, CATALOG)
    values = {name: value for _, name, value in parts}
    expected = "".join(
        f"{lit} {render_text_value(OutputField(name, CATALOG[name]), values[name], TS, 0)} " for lit, name, _ in parts
    )
    assert fmt.render(values, TS, 0) == expected + tail
    rendered = fmt.render(values, TS, 0)
    alert = build_alert(rule="r", priority="Notice", source="syscall", tags=["b", "a", "b"], output=fmt,
                        values=values, ts_ns=TS, hostname="h", utc_offset=0)
    line = alert.to_json()
    parsed = json.loads(line)
    assert list(parsed) == sorted(parsed) and list(parsed["output_fields"]) == sorted(parsed["output_fields"])
    assert parsed["tags"] == ["a", "b"] and parsed["output"] == "22:13:20.123456789: Notice " + rendered
    assert dump_json(parsed) == line
