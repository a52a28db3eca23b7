"""A fuzz run of codec.decode: mutated, truncated and re-checksummed blobs must only raise CodecError.

Run alone: python -m bench.fuzz_codec [--n 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import zlib
from collections import Counter
from typing import Any

from zexus_bcache import codec
from zexus_bcache.errors import CodecError


def forge(raw: bytes) -> bytes:
    """A blob with a valid header and checksum around any raw (decompressed) body."""
    body = zlib.compress(raw)
    prefix = codec._HEADER.pack(codec.MAGIC, codec.FORMAT_VERSION, codec.FLAG_ZLIB, len(body), len(raw), b"")
    prefix = prefix[: codec._CHECKED_PREFIX]
    return prefix + codec._checksum(prefix, body) + body


def run(blobs: list[bytes], n: int, seed: int = 1) -> dict[str, Any]:
    """Decode n mutated blobs; count the outcomes (anything but decoded/CodecError is a failure)."""
    rng = random.Random(seed)
    raws = [codec.check(b) for b in blobs]
    alphabet = b'[]{}",:0123456789-.eE tfnLTBdDNESFibo\x00\xff'
    outcomes: Counter[str] = Counter()
    examples: list[str] = []
    t0 = time.perf_counter()
    for i in range(n):
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
            outcomes["unexpected"] += 1
            if len(examples) < 5:
                examples.append(f"{type(exc).__name__}: {str(exc)[:120]}")
    elapsed = time.perf_counter() - t0
    return {"n": n, "seed": seed, "programs": len(blobs), "seconds": elapsed, "decoded": outcomes["decoded"],
            "codec_errors": outcomes["CodecError"], "unexpected": outcomes["unexpected"],
            "unexpected_examples": examples}  # fmt: skip


def main() -> None:
    from ._common import corpus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    progs, _ = corpus()
    result = run([p.blob for p in progs], args.n, args.seed)
    print(result)
    if result["unexpected"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
