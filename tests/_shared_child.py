"""A client of the shared tier in its own process (driven by test_shared.py).

argv[1] is JSON: db (its own local SQLite cache), url (the shared server), programs (paths),
go_file (optional: after the first `split` programs, print READY and wait for this file to exist,
then do the rest and every program again), extra (sources no cache has seen, compiled after go).
Prints one line ``RESULT {json}``: per program the tier that served it and the SHA-256 of the
encoded bytecode; the cache's statistics; how many shared-tier warnings were logged; errors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path

from zexus_bcache import codec
from zexus_bcache.cache import BytecodeCache


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> None:
    args = json.loads(sys.argv[1])
    warnings = Warnings()
    logging.getLogger("zexus_bcache").addHandler(warnings)
    options = {"retry_after": 60.0, "get_timeout": 5.0, "drain_timeout": 5.0, "connect_timeout": 2.0}
    results: list[dict[str, object]] = []
    errors: list[str] = []

    def compile_one(name: str, source: str) -> None:
        try:
            report = cache.compile_source_report(source, name)
            digest = hashlib.sha256(codec.encode(report.bytecode)).hexdigest()
            results.append({"name": name, "tier": report.tier, "digest": digest})
        except Exception as exc:  # the test counts these: there must be none
            errors.append(f"{name}: {exc!r}")

    programs = [(Path(p).name, Path(p).read_text(encoding="utf-8")) for p in args["programs"]]
    cache = BytecodeCache(path=args["db"], shared=args["url"], shared_options=options, strict=True)
    split = args.get("split", len(programs))
    for name, source in programs[:split]:
        compile_one(name, source)
    if args.get("go_file"):
        print("READY", flush=True)
        deadline = time.monotonic() + 60
        while not Path(args["go_file"]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        for name, source in programs[split:] + programs:
            compile_one(name, source)
        for i, source in enumerate(args.get("extra", [])):
            compile_one(f"extra{i}", source)
    else:
        for name, source in programs[split:]:
            compile_one(name, source)
    cache.flush()
    stats = cache.get_stats()
    cache.close()
    shared_warnings = [m for m in warnings.messages if "shared tier" in m]
    print("RESULT " + json.dumps({"results": results, "stats": stats, "errors": errors, "warnings": shared_warnings}))


if __name__ == "__main__":
    main()
