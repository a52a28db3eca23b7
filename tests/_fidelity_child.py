"""Child process for the fidelity tests: run a program from fresh or from decoded bytecode."""

import sys

from zexus_bcache import codec, pipeline


def main() -> None:
    mode, program = sys.argv[1], sys.argv[2]
    if mode == "fresh":
        with open(program, encoding="utf-8") as f:
            bytecode = pipeline.compile_source(f.read(), program)
    elif mode == "decoded":
        with open(sys.argv[3], "rb") as f:
            bytecode = codec.decode(f.read())
    elif mode == "zxc":
        with pipeline.quiet():
            from zexus.vm import binary_bytecode
        with open(sys.argv[3], "rb") as f:
            bytecode = binary_bytecode.deserialize(f.read())
    else:
        raise SystemExit(f"unknown mode {mode}")
    pipeline.run_bytecode(bytecode, program)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
