"""Child processes of the bench: `python -m bench._child fidelity|warm ...` (a new interpreter each time).

fidelity MODE PROGRAM [BLOB]: run a program from fresh bytecode (``fresh``) or from bytes made by
another process (``ours``: our codec, ``zxc``: zexus's .zxc, ``pickle``); the stdout is compared.

warm SPEC_JSON: one warm start per cache in the order given (each cache opened first, its open
timed apart), then lex + parse + compile of the same source, which this process has never parsed
(zexus's parser keeps a process-wide block cache). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

T_START = time.perf_counter()


def fidelity(mode: str, program: str, blob_path: str | None) -> None:
    from zexus_bcache import codec, pipeline

    if mode == "fresh":
        with open(program, encoding="utf-8") as f:
            bytecode = pipeline.compile_source(f.read(), program)
    else:
        with open(blob_path or "", "rb") as f:
            data = f.read()
        if mode == "ours":
            bytecode = codec.decode(data)
        elif mode == "zxc":
            with pipeline.quiet():
                from zexus.vm import binary_bytecode
            bytecode = binary_bytecode.deserialize(data)
        elif mode == "pickle":
            import pickle

            bytecode = pickle.loads(data)
        else:
            raise SystemExit(f"unknown mode {mode}")
    pipeline.run_bytecode(bytecode, program)
    sys.stdout.flush()


def warm(spec: dict) -> None:
    t0 = time.perf_counter()
    from zexus_bcache import codec, keys, pipeline
    from zexus_bcache.cache import BytecodeCache

    t_import = time.perf_counter() - t0
    path = spec["program"]
    with open(path, encoding="utf-8") as f:
        source = f.read()
    out: dict = {"import_s": t_import, "interpreter_s": t0 - T_START, "open_s": {}, "warm_s": {}, "ok": {}}
    for impl in spec["order"]:
        where = spec["where"][impl]
        t1 = time.perf_counter()
        if impl == "ours (persistent)":
            cache = BytecodeCache(path=where)
            t2 = time.perf_counter()
            report = cache.compile_source_report(source, path)
            t3 = time.perf_counter()
            ok = report.tier == "store"
            cache.close()
            # The same warm start again in this process (front off): the decoder is no longer cold.
            with BytecodeCache(path=where, max_size=0) as again:
                t_again = time.perf_counter()
                again_ok = again.compile_source_report(source, path).tier == "store"
                out["warm_again_s"] = time.perf_counter() - t_again if again_ok else None
        elif impl == "zexus (persistent)":
            with pipeline.quiet():
                from zexus.vm.cache import BytecodeCache as Upstream
            cache = Upstream(persistent=True, cache_dir=where)
            t2 = time.perf_counter()
            found = cache.get_by_file(path)
            t3 = time.perf_counter()
            ok = bool(found)
        else:  # diskcache+codec, diskcache+pickle: keyed by our source key
            import diskcache

            dc = diskcache.Cache(where)
            t2 = time.perf_counter()
            key = keys.source_key(source, keys.compiler_fingerprint(), path)
            value = dc.get(key)
            if impl == "diskcache+codec" and value is not None:
                value = codec.decode(value)
            t3 = time.perf_counter()
            ok = value is not None
            dc.close()
        out["open_s"][impl] = t2 - t1
        out["warm_s"][impl] = t3 - t2
        out["ok"][impl] = ok
    pipeline._zexus()  # imported already by the codec; never counted as parsing time
    t4 = time.perf_counter()
    program = pipeline.parse(source, path)
    pipeline.compile_program(program)
    out["cold_s"] = time.perf_counter() - t4
    print(json.dumps(out))


def main() -> None:
    if sys.argv[1] == "fidelity":
        fidelity(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif sys.argv[1] == "warm":
        warm(json.loads(sys.argv[2]))
    else:
        raise SystemExit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
