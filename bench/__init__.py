"""The zexus_bcache bench: ours side by side with zexus 2.0's BytecodeCache and diskcache.

Run from the repository root: ``python -m bench [--quick] [--out DIR] [--only SECTION...] [--update-readme]``.
Sections (one module each): codec, store, seed (the seed's five benchmarks), warm, load, run, shared.
"""

SECTIONS = ("codec", "store", "seed", "warm", "load", "run", "shared")
