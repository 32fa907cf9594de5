"""Falco's alert formats, byte for byte: the text line and `json_output`.

Falco builds every alert from two libsinsp formatters: a prefix
``*%evt.time: <Priority>`` and the rule's output with a ``*`` prepended (the
star tells libsinsp to print ``<NA>`` for missing values instead of dropping
the line). The text alert is ``prefix + " " + message``. With json_output the
same text becomes the ``output`` key next to ``time`` (UTC RFC 3339 with ns),
``rule``, ``priority``, ``source``, ``hostname``, ``tags`` (a std::set, so
sorted) and ``output_fields`` (every ``%field`` of the message plus the
prefix's ``evt.time``, typed, ``null`` when missing); nlohmann::json keeps
object keys sorted and dumps without spaces, invalid UTF-8 replaced.

``evt.time`` renders like libsinsp's ts_to_string: the UTC offset is taken
once, for the current time (gmt2local(0)), and applied to every event, so an
archive read in another zone or season shows the analyst's wall clock, as
Falco replaying a capture file would.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from analyzer.errors import TraceError
from analyzer.fields.spec import ArgKind, FieldSpec, FieldType

NS = 1_000_000_000

NOT_AVAILABLE = "<NA>"

# Falco's rule compiler replaces this placeholder when no -pc/-pk option
# gives a replacement.
CONTAINER_INFO = "%container.info"
CONTAINER_INFO_DEFAULT = "container_id=%container.id container_name=%container.name"

# Fields whose value is a rendering of the event timestamp: rendered here,
# not in SQL, because they depend on the analyst's time zone. In JSON
# libsinsp emits all of them as the raw ns timestamp (extract_as_js).
CLOCK_FIELDS = ("evt.time", "evt.time.s", "evt.time.iso8601", "evt.datetime", "evt.datetime.s")

# libsinsp's field-name token: dotted identifiers; an argument in brackets.
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+")
_BRACKET_ARG = re.compile(r"\[([^\]\[]*)\]")
_WIDTH = re.compile(r"[0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def utc_offset_now() -> int:
    """Seconds east of UTC right now, to the minute, as libsinsp's gmt2local(0)."""
    return time.localtime().tm_gmtoff // 60 * 60


def _clock(ts_ns: int, utc_offset: int) -> tuple[int, int, int]:
    sec, nsec = divmod(ts_ns, NS)
    local = sec + utc_offset
    return local, local % 86400, nsec


def falco_time(ts_ns: int, utc_offset: int) -> str:
    """`evt.time`: HH:MM:SS.nnnnnnnnn in the analyst's zone."""
    _, s, nsec = _clock(ts_ns, utc_offset)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}.{nsec:09d}"


def _falco_date(ts_ns: int, utc_offset: int) -> str:
    local, s, _ = _clock(ts_ns, utc_offset)
    return time.strftime("%Y-%m-%d", time.gmtime(local - s))


def iso8601_utc(ts_ns: int) -> str:
    """The json_output `time` key: RFC 3339 in UTC with nanoseconds."""
    sec, nsec = divmod(ts_ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{nsec:09d}Z"


def _clock_text(name: str, ts_ns: int, utc_offset: int) -> str:
    if name == "evt.time":
        return falco_time(ts_ns, utc_offset)
    if name == "evt.time.s":
        return falco_time(ts_ns, utc_offset)[:8]
    if name == "evt.datetime":
        return _falco_date(ts_ns, utc_offset) + " " + falco_time(ts_ns, utc_offset)
    if name == "evt.datetime.s":
        return _falco_date(ts_ns, utc_offset) + " " + falco_time(ts_ns, utc_offset)[:8]
    # evt.time.iso8601: libsinsp's ts_to_iso_8601, always UTC.
    return iso8601_utc(ts_ns)


@dataclass(frozen=True)
class OutputField:
    """One ``%field`` of an output format."""

    key: str  # as written, without the %: the output_fields key (proc.aname[2], evt.arg.flags)
    spec: FieldSpec
    arg: str | None = None

    @property
    def is_clock(self) -> bool:
        return self.spec.name in CLOCK_FIELDS


@dataclass(frozen=True)
class _Token:
    field: OutputField
    width: int  # libsinsp's %20field: pad or cut to width; 0 means as is


@dataclass(frozen=True)
class OutputFormat:
    """A parsed rule output: literal text and field tokens in order."""

    text: str
    parts: tuple[str | _Token, ...]
    fields: tuple[OutputField, ...] = field(default=())  # distinct, in order of appearance

    def render(self, values: Mapping[str, object], ts_ns: int, utc_offset: int) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            text = render_text_value(part.field, values.get(part.field.key), ts_ns, utc_offset)
            out.append(text.ljust(part.width)[: part.width] if part.width else text)
        return "".join(out)

    def json_fields(self, values: Mapping[str, object], ts_ns: int) -> dict[str, object]:
        return {f.key: render_json_value(f, values.get(f.key), ts_ns) for f in self.fields}


class OutputFormatError(TraceError):
    """An output format libsinsp would refuse (unknown field, dangling %)."""


def _resolve_field(token: str, catalog: Mapping[str, FieldSpec]) -> tuple[FieldSpec, str | None, int] | None:
    """Longest known field at the start of ``token``: (spec, dotted arg, length used).

    Like libsinsp, a name that is not a field is shortened until it is one;
    a field taking an argument may take it after a dot (evt.arg.flags).
    """
    for end in range(len(token), 0, -1):
        candidate = token[:end]
        spec = catalog.get(candidate)
        if spec is not None:
            return spec, None, end
        head, dot, rest = candidate.rpartition(".")
        while dot:
            spec = catalog.get(head)
            if spec is not None and spec.arg is not ArgKind.NONE:
                return spec, candidate[len(head) + 1 :], end
            head, dot, _ = head.rpartition(".")
    return None


def parse_output(text: str, catalog: Mapping[str, FieldSpec]) -> OutputFormat:
    """Parse a rule's output as libsinsp's formatter does.

    A leading ``*`` is dropped (Falco adds its own); ``%container.info``
    takes Falco's default replacement.
    """
    if text.startswith("*"):
        text = text[1:]
    text = text.replace(CONTAINER_INFO, CONTAINER_INFO_DEFAULT)
    parts: list[str | _Token] = []
    fields: dict[str, OutputField] = {}
    literal_start = i = 0
    while i < len(text):
        if text[i] != "%":
            i += 1
            continue
        if i > literal_start:
            parts.append(text[literal_start:i])
        if i == len(text) - 1:
            raise OutputFormatError(f"output {text!r}: a format cannot end with %")
        width_match = _WIDTH.match(text, i + 1)
        width = int(width_match.group()) if width_match else 0
        start = width_match.end() if width_match else i + 1
        name_match = _FIELD_NAME.match(text, start)
        resolved = _resolve_field(name_match.group(), catalog) if name_match else None
        if resolved is None:
            shown = text[i : i + 40]
            raise OutputFormatError(f"output field {shown!r}: unknown field")
        spec, arg, used = resolved
        end = start + used
        bracket = _BRACKET_ARG.match(text, end) if arg is None and spec.arg is not ArgKind.NONE else None
        if bracket:
            arg = bracket.group(1)
            end = bracket.end()
        if arg is None and spec.arg is ArgKind.REQUIRED:
            raise OutputFormatError(f"output field %{text[start:end]}: {spec.name} needs an argument")
        out_field = fields.setdefault(text[start:end], OutputField(text[start:end], spec, arg))
        parts.append(_Token(out_field, width))
        literal_start = i = end
    if literal_start < len(text):
        parts.append(text[literal_start:])
    return OutputFormat(text, tuple(parts), tuple(fields.values()))


def _scalar_text(spec: FieldSpec, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if spec.type is FieldType.DOUBLE and isinstance(value, (int, float)):
        return f"{float(value):.1f}"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _first_of_many(out_field: OutputField, value: object) -> object:
    """A multi-valued field that is not a list (proc.aname without index: every
    ancestor) prints its first value, as libsinsp's tostring/tojson do."""
    if out_field.spec.any_element and not out_field.spec.is_list and out_field.arg is None and isinstance(value, list):
        return value[0] if value else None
    return value


def render_text_value(out_field: OutputField, value: object, ts_ns: int, utc_offset: int) -> str:
    """A value as libsinsp's tostring renders it; lists as ``(a,b)``."""
    if out_field.is_clock:
        return _clock_text(out_field.spec.name, ts_ns, utc_offset)
    value = _first_of_many(out_field, value)
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_scalar_text(out_field.spec, v) for v in value if v is not None) + ")"
    return _scalar_text(out_field.spec, value)


def _scalar_json(spec: FieldSpec, value: object) -> object:
    if isinstance(value, (bool, int, float)):
        # Numbers stay numbers; a DOUBLE holding an integral value is still a double.
        return float(value) if spec.type is FieldType.DOUBLE and not isinstance(value, bool) else value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else _scalar_text(spec, value)


def render_json_value(out_field: OutputField, value: object, ts_ns: int) -> object:
    """A value as libsinsp's tojson emits it: typed, null when missing."""
    if out_field.is_clock:
        return ts_ns
    value = _first_of_many(out_field, value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_scalar_json(out_field.spec, v) for v in value if v is not None]
    return _scalar_json(out_field.spec, value)


@dataclass(frozen=True)
class Alert:
    """One fired rule on one event, with everything Falco puts in an alert."""

    time_ns: int
    rule: str
    priority: str  # Falco's spelling: Priority.falco_name ("Warning", "Informational")
    source: str
    hostname: str
    output: str  # the full text line: "HH:MM:SS.nnnnnnnnn: Priority message"
    tags: tuple[str, ...]  # sorted, as Falco's std::set
    output_fields: dict[str, object]
    evt_num: int | None = None
    proc_key: str | None = None
    pid: int | None = None
    container_id: str | None = None
    segment: str | None = None

    def to_json(self) -> str:
        """The json_output line, as Falco's nlohmann dump writes it."""
        return dump_json(
            {
                "hostname": self.hostname,
                "output": self.output,
                "output_fields": self.output_fields,
                "priority": self.priority,
                "rule": self.rule,
                "source": self.source,
                "tags": list(self.tags),
                "time": iso8601_utc(self.time_ns),
            }
        )


def dump_json(obj: object) -> str:
    """nlohmann::json::dump(-1, ' ', false, replace): compact, sorted keys, UTF-8 kept."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Lone surrogates (undecodable bytes) become U+FFFD, as nlohmann's replace handler does.
    return _SURROGATE.sub("\ufffd", text)


def build_alert(
    *,
    rule: str,
    priority: str,
    source: str,
    tags: Sequence[str],
    output: OutputFormat,
    values: Mapping[str, object],
    ts_ns: int,
    hostname: str,
    utc_offset: int,
    **ids: object,
) -> Alert:
    """Assemble an alert from a matched event's field values."""
    prefix = f"{falco_time(ts_ns, utc_offset)}: {priority}"
    fields = output.json_fields(values, ts_ns)
    fields["evt.time"] = ts_ns
    return Alert(
        time_ns=ts_ns,
        rule=rule,
        priority=priority,
        source=source,
        hostname=hostname,
        output=prefix + " " + output.render(values, ts_ns, utc_offset),
        tags=tuple(sorted(set(tags))),
        output_fields=fields,
        **ids,  # type: ignore[arg-type]
    )
