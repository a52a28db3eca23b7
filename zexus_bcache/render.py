"""How the command line prints what a command returns: one table, one JSON and one CSV writer for all.

A command hands over plain data: rows (a list of mappings) or one record (a mapping). JSON and CSV
carry every field with its raw value (sizes in bytes, times in Unix seconds, blobs as hex); the
table shows chosen columns, made readable by each column's ``text`` function.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

FORMATS = ("table", "json", "csv", "tsv", "nl")
_WIDE = 160  # table width when the output is not a terminal (rich would wrap at 80)


def plain(value: Any) -> str:
    """A cell as text; missing values as a dash."""
    if value is None:
        return "-"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def size(value: Any) -> str:
    """Bytes in binary units: 512 B, 12.3 KiB, 4.0 MiB."""
    if value is None:
        return "-"
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def limit(value: Any) -> str:
    """A limit where 0 means none."""
    return "unlimited" if value == 0 else plain(value)


def byte_limit(value: Any) -> str:
    return "unlimited" if value == 0 else f"{size(value)} ({value} bytes)"


def age(timestamp: Any) -> str:
    """How long ago a Unix time was: 12s ago, 5m ago, 3h ago, 2d ago."""
    if timestamp is None:
        return "-"
    seconds = max(0.0, time.time() - float(timestamp))
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{int(seconds // span)}{unit} ago"
    return f"{int(seconds)}s ago"


def when(timestamp: Any) -> str:
    """A Unix time as local date and time, and how long ago."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(timestamp))) + f" ({age(timestamp)})"


def short_key(key: Any) -> str:
    return str(key)[:12]


def percent(value: Any) -> str:
    """A percentage with 2 decimals; a dash when there is none (a hit rate before any lookup)."""
    return "—" if value is None else f"{float(value):.2f}%"


def disassembly(obj: Mapping[str, Any]) -> list[str]:
    """The layout of zexus's Bytecode.disassemble() (which fails on string opcodes), from plain data."""
    lines = []
    if obj["constants"]:
        lines.append("Constants:")
        for i, text in enumerate(obj["constants"]):
            lines.append(f"  {i:3d}: {text if len(text) <= 70 else text[:67] + '...'}")
    lines.append("Instructions:")
    for ins in obj["instructions"]:
        operand = ins["operand"]
        shown = "" if operand is None else tuple(operand) if isinstance(operand, list) else operand
        lines.append(f"  {ins['offset']:4d}  {ins['opcode']:20s} {shown}".rstrip())
    return lines


@dataclass(frozen=True)
class Column:
    """A table column (or, in a record, a line): which field, its header, how its cells read."""

    key: str
    header: str = ""
    text: Callable[[Any], str] = plain
    justify: Literal["left", "right"] = "left"
    wrap: bool = True  # False: keep cells on one line; the wrapping columns give way on narrow terminals

    @property
    def title(self) -> str:
        return self.header or self.key


def rows(
    data: Sequence[Mapping[str, Any]],
    fmt: str,
    columns: Sequence[Column] | None = None,
    *,
    fields: Sequence[str] | None = None,
    title: str | None = None,
    empty: str = "(nothing)",
    out: TextIO | None = None,
) -> None:
    """Print rows: a table of ``columns`` (default: every field), or JSON / CSV / TSV / JSON lines of every field.

    ``fields`` names the fields in order when there may be no rows to take them from (``sql``).
    """
    out = out or sys.stdout
    names = list(fields) if fields is not None else list(data[0]) if data else [c.key for c in columns or ()]
    if fmt == "json":
        write_json([dict(row) for row in data], out)
    elif fmt == "nl":
        for row in data:
            out.write(json.dumps(dict(row), ensure_ascii=False, default=_json_default) + "\n")
    elif fmt in ("csv", "tsv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, "excel-tab" if fmt == "tsv" else "excel", lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_csv_cell(row.get(name)) for name in names] for row in data)
        out.write(buffer.getvalue())
    elif fmt == "table":
        if not data:
            _print(out, empty, style="dim")
            return
        columns = columns or [Column(name) for name in names]
        table = _table(title, columns)
        for row in data:
            table.add_row(*(_cell(c.text(row.get(c.key))) for c in columns))
        _print(out, table)
    else:
        raise ValueError(f"unknown output format {fmt!r}; known: {', '.join(FORMATS)}")


def record(
    data: Mapping[str, Any],
    fmt: str,
    fields: Sequence[Column] | None = None,
    *,
    title: str | None = None,
    out: TextIO | None = None,
) -> None:
    """Print one record: a two-column table of ``fields`` (default: all), JSON of all, or one CSV row."""
    if fmt != "table":
        if fmt == "json":
            write_json(dict(data), out or sys.stdout)
        else:
            rows([data], fmt, out=out)
        return
    table = _table(title, [Column("field", ""), Column("value", "")], show_header=False)
    for field in fields or [Column(name) for name in data]:
        table.add_row(_cell(field.title), _cell(field.text(data.get(field.key))))
    _print(out or sys.stdout, table)


def write_json(value: Any, out: TextIO | None = None) -> None:
    """JSON, indented; bytes as hex, paths as strings."""
    (out or sys.stdout).write(json.dumps(value, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def _cell(text: str) -> Any:
    """Cell text as it is: never read as rich markup (a path or a value may contain "[red]")."""
    from rich.text import Text

    return Text(text)


def _table(title: str | None, columns: Sequence[Column], show_header: bool = True) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        title=title, box=box.SIMPLE_HEAD, show_header=show_header, show_edge=False, title_justify="left", pad_edge=False
    )
    for column in columns:
        overflow: Literal["fold", "ignore"] = "fold" if column.wrap else "ignore"
        table.add_column(column.title, justify=column.justify, overflow=overflow, no_wrap=not column.wrap)
    return table


def _print(out: TextIO, renderable: Any, style: str | None = None, console: Any = None) -> None:
    """Print with rich: styled on a terminal; elsewhere plain, wider, without trailing blanks.

    On a terminal too narrow for a table, the table is laid out at the width it needs and the
    terminal wraps its lines: a path is never folded into pieces that cannot be copied.
    """
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console(file=out, highlight=False)
    if console.is_terminal:
        measured = Measurement.get(console, console.options.update_width(10_000), renderable)
        columns = getattr(renderable, "columns", [])
        # All cells unwrappable: their full width. Else the wrapping columns may give way (rich's minimum
        # is short by up to a cell per column, hence the slack).
        needed = measured.maximum if all(c.no_wrap for c in columns) else measured.minimum + len(columns)
        if needed > console.width:
            console = Console(
                file=console.file, highlight=False, width=needed, force_terminal=True, color_system=console.color_system
            )
        console.print(renderable, style=style)
        return
    console = Console(file=io.StringIO(), highlight=False, width=_WIDE, color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    out.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


# -- one entry's bytecode as plain data (show) ---------------------------------------------------


def code_objects(value: Any) -> list[dict[str, Any]]:
    """Every Bytecode in a cached value as plain data, depth first: the program (or statements), then functions."""
    return [_code_object(name, bytecode) for name, bytecode in _code_objects(value)]


def _code_objects(value: Any) -> list[tuple[str, Any]]:
    from zexus.vm.bytecode import Bytecode

    roots = [(f"<statement {i}>", b) for i, b in enumerate(value)] if isinstance(value, list) else [("<main>", value)]
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def nested(constant: Any, name: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
        if isinstance(constant, Bytecode):
            yield name, constant
        elif depth < 8 and isinstance(constant, dict):
            label = constant.get("name") if isinstance(constant.get("bytecode"), Bytecode) else None
            for k, v in constant.items():
                yield from nested(v, f"{name.rsplit('.', 1)[0]}.{label}" if label else f"{name}[{k!r}]", depth + 1)
        elif depth < 8 and isinstance(constant, (list, tuple)):
            for j, item in enumerate(constant):
                yield from nested(item, f"{name}[{j}]", depth + 1)

    def visit(name: str, bytecode: Any) -> None:
        if id(bytecode) in seen:
            return
        seen.add(id(bytecode))
        out.append((name, bytecode))
        for i, constant in enumerate(bytecode.constants):
            for inner_name, inner in nested(constant, f"{name}.const[{i}]"):
                visit(inner_name, inner)

    for root_name, root in roots:
        visit(root_name, root)
    return out


def _code_object(name: str, bytecode: Any) -> dict[str, Any]:
    """One Bytecode as plain data: constants as reprs, instructions as offset, opcode, operand."""
    return {
        "name": name,
        "constants": [repr(c) for c in bytecode.constants],
        "instructions": [
            {"offset": i, "opcode": str(getattr(op, "name", op)), "operand": _plain_operand(operand)}
            for i, (op, operand) in enumerate(bytecode.instructions)
        ],
    }


def _plain_operand(operand: Any) -> Any:
    if operand is None or isinstance(operand, (bool, int, float, str)):
        return operand
    if isinstance(operand, (list, tuple)):
        return [_plain_operand(x) for x in operand]
    return repr(operand)


class LazyConsole:
    """A rich Console made on first print (as zx prints its messages): a run that prints nothing never imports rich."""

    _console: Any = None

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self._console is None:
            from rich.console import Console

            self._console = Console()
        self._console.print(*objects, **kwargs)


def preload() -> None:
    """Import rich now (a server pays it once before forking)."""
    import rich.console  # noqa: F401
