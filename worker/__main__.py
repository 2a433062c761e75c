"""`python -m worker run JOB | serve | demo | bench`: the rig-side command line."""

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

    demo = sub.add_parser("demo", help="write sieve-made demo data in Step 1's output format, with its truth")
    demo.add_argument("--out", type=Path, required=True, help="the Step 1 folder to write")
    demo.add_argument("--null", type=Path, help="also write the null variant here (same survivors, uniform draws)")
    demo.add_argument("--scale", choices=("demo", "small"), default="demo",
                      help="demo: about the proposal's scale (default); small: a quick one")
    demo.add_argument("--seed", type=int, default=0)

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
    if args.command == "demo":
        from worker.demo import demo_command

        return demo_command(args.out, args.scale, args.seed, args.null)
    if args.command == "bench":
        from worker.bench import bench

        bench(args.data, repeats=args.repeats)
        return 0
    print(contract.code_hash())
    return 0


if __name__ == "__main__":
    sys.exit(main())
