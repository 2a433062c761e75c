"""`python -m worker run JOB | serve | synth | bench`: the rig-side command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from worker import VERSION, contract


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--version", action="version", version=VERSION)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one job file and write its result file")
    run.add_argument("job", help="job file, relative to --root")
    run.add_argument("--root", type=Path, default=Path("."), help="work directory (default: .)")

    serve = sub.add_parser("serve", help="the rig's warm server: forks a slot server per slot, each running the jobs"
                           " named on stdin, one at a time")
    serve.add_argument("--root", type=Path, default=Path("."), help="work directory (default: .)")

    synth = sub.add_parser("synth", help="write a synthetic data set with known truth")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--mode", choices=("planted", "null"), required=True)
    synth.add_argument("--survivors", type=int, default=17_126)
    synth.add_argument("--train", type=int, default=4_000)
    synth.add_argument("--holdout", type=int, default=1_000)
    synth.add_argument("--mod", type=int, default=1_000)
    synth.add_argument("--prng", default="java_lcg")
    synth.add_argument("--seed", type=int, default=0)

    bench = sub.add_parser("bench", help="time one trial at the proposal's scale on this machine")
    bench.add_argument("--data", type=Path, default=Path("data/bench"))
    bench.add_argument("--repeats", type=int, default=5)

    sub.add_parser("hash", help="print this worker's code hash")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "run":
        from worker.run import execute

        _, status = execute(args.job, args.root.resolve(), contract.code_hash())
        return status
    if args.command == "serve":
        from worker.rig_server import serve_rig

        return serve_rig(args.root)
    if args.command == "synth":
        from worker.synth import synth_command

        synth_command(args.out, args.mode, n_survivors=args.survivors, n_train=args.train,
                      n_holdout=args.holdout, mod=args.mod, prng=args.prng, seed=args.seed)
        return 0
    if args.command == "bench":
        from worker.bench import bench

        bench(args.data, repeats=args.repeats)
        return 0
    print(contract.code_hash())
    return 0


if __name__ == "__main__":
    sys.exit(main())
