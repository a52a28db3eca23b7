"""A long fuzz run of codec.decode: mutated, truncated and re-checksummed blobs must only raise CodecError.

Run: python bench/fuzz_codec.py [--n 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import programs  # noqa: E402

from zexus_bcache import codec, integration  # noqa: E402
from zexus_bcache.errors import CodecError  # noqa: E402


def forge(raw: bytes) -> bytes:
    body = zlib.compress(raw)
    prefix = codec._HEADER.pack(codec.MAGIC, codec.FORMAT_VERSION, codec.FLAG_ZLIB, len(body), len(raw), b"")
    prefix = prefix[: codec._CHECKED_PREFIX]
    return prefix + codec._checksum(prefix, body) + body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    blobs = []
    for path in programs():
        try:
            blobs.append(codec.encode(integration.compile_source(path.read_text(encoding="utf-8"), str(path))))
        except Exception:
            continue
    raws = [codec.check(b) for b in blobs]
    alphabet = b'[]{}",:0123456789-.eE tfnLTBdDNESFibo\x00\xff'
    outcomes: Counter[str] = Counter()
    t0 = time.time()
    for i in range(args.n):
        kind = i % 3
        if kind == 0:  # raw bit/byte mutations and truncation
            blob = bytearray(rng.choice(blobs))
            for _ in range(rng.randint(1, 4)):
                blob[rng.randrange(len(blob))] = rng.randrange(256)
            data = bytes(blob[: rng.randint(0, len(blob))] if rng.random() < 0.3 else blob)
        elif kind == 1:  # structural mutations behind a valid checksum
            raw = bytearray(rng.choice(raws))
            for _ in range(rng.randint(1, 6)):
                raw[rng.randrange(len(raw))] = rng.choice(alphabet)
            data = forge(bytes(raw))
        else:  # truncated bodies behind a valid checksum
            raw = rng.choice(raws)
            data = forge(raw[: rng.randrange(len(raw))])
        try:
            codec.decode(data)
            outcomes["decoded"] += 1
        except CodecError:
            outcomes["CodecError"] += 1
        except Exception as exc:  # the fuzz target: this must never happen
            outcomes[f"UNEXPECTED {type(exc).__name__}"] += 1
            print(f"unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
    dt = time.time() - t0
    print(f"{args.n} blobs in {dt:.1f} s from {len(blobs)} programs: {dict(outcomes)}")
    if any(k.startswith("UNEXPECTED") for k in outcomes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
