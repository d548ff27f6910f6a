"""The ``tomopick`` command: demo, gui, run, simulate, evaluate.

The commands that use Scipion (demo, gui, run) fill in the Scipion environment
a user has not set (`tomopick.environment`) before pyworkflow is loaded, so
nothing about SCIPION_* needs to be known; simulate and evaluate need none.
"""
import argparse
import os
import sys
import time


def _parser():
    parser = argparse.ArgumentParser(
        prog="tomopick", description="Native cryo-ET particle picking for Scipion.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run both picking workflows on simulated tomograms, "
                                       "headless, and report accuracy against the ground truth")
    demo.add_argument("--project", default=None,
                      help="project name (default: tomopick_demo_<date-time>)")
    demo.add_argument("--size", type=int, nargs=3, default=None, metavar=("NZ", "NY", "NX"),
                      help="phantom shape in voxels")
    demo.add_argument("--seed", type=int, default=0)

    gui = sub.add_parser("gui", help="open the Scipion project GUI (or the project manager)")
    gui.add_argument("project", nargs="?", default=None)

    run = sub.add_parser("run", help="load a saved workflow (JSON or .json.template) into a "
                                     "project and run it headless")
    run.add_argument("workflow", help="workflow file, or the name of a built-in template "
                                      "(directional, non_directional, picket)")
    run.add_argument("--project", required=True, help="project name (created if missing)")
    run.add_argument("--set", action="append", default=[], metavar="ALIAS=VALUE",
                     help="value of a template field, by alias (repeatable)")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--continue", dest="resume", action="store_const", const=True,
                       default=None,
                       help="continue the earlier run of this workflow (same values) in the "
                            "project: finished protocols and steps are kept (the default "
                            "when there is one; an error when there is none)")
    again.add_argument("--new", dest="resume", action="store_const", const=False,
                       help="load a fresh copy of the workflow even if the project ran it")

    sim = sub.add_parser("simulate", help="write a phantom tomogram with its ground truth")
    sim.add_argument("outdir")
    sim.add_argument("--name", default="tomo_1")
    sim.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128),
                     metavar=("NZ", "NY", "NX"))
    sim.add_argument("--voxel-size", type=float, default=10.0, help="Å/voxel")
    sim.add_argument("--particles", type=int, default=30)
    sim.add_argument("--vesicles", type=int, default=1)
    sim.add_argument("--proteins-per-vesicle", type=int, default=12)
    sim.add_argument("--filaments", type=int, default=0)
    sim.add_argument("--gold", type=int, default=0)
    sim.add_argument("--snr", type=float, default=None, help="signal/noise variance; none = noise-free")
    sim.add_argument("--tilt-range", type=float, nargs=2, default=(-60, 60), metavar=("MIN", "MAX"))
    sim.add_argument("--no-wedge", action="store_true", help="no missing wedge")
    sim.add_argument("--seed", type=int, default=0)

    ev = sub.add_parser("evaluate", help="precision/recall/F1 and orientation error of picks")
    ev.add_argument("picks", help="picked coordinates (csv, star, tbl, mod, ndjson, yaml)")
    ev.add_argument("truth", help="ground truth: a simulator *_truth.json or a coordinate file")
    ev.add_argument("--radius", type=float, required=True, help="match radius, voxels")
    ev.add_argument("--format", default="auto", help="format of PICKS (default: from the extension)")
    ev.add_argument("--voxel-size", type=float, default=None,
                    help="Å/voxel of PICKS when it differs from the truth's")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command in ("demo", "gui", "run"):
        from tomopick import environment
        environment.set_defaults()
    return {"demo": _demo, "gui": _gui, "run": _run, "simulate": _simulate,
            "evaluate": _evaluate}[args.command](args) or 0


# ------------------------------------------------------------------ commands
def _demo(args):
    from tomopick import demo
    return demo.run_demo(project_name=args.project, shape=args.size, seed=args.seed)


def _gui(args):
    import subprocess
    if args.project:
        command = [sys.executable, "-m", "pyworkflow.apps.pw_project", args.project]
    else:
        command = [sys.executable, "-m", "scipion"]
    return subprocess.call(command)


def _run(args):
    from tomopick import workflows
    values = {}
    for item in args.set:
        if "=" not in item:
            print(f"--set needs ALIAS=VALUE, got {item!r}", file=sys.stderr)
            return 2
        alias, value = item.split("=", 1)
        values[alias] = value
    try:
        results = workflows.run_workflow(args.workflow, args.project, values, log=print,
                                         resume=args.resume)
    except (FileNotFoundError, ValueError) as err:
        print(f"tomopick run: {err}", file=sys.stderr)
        return 2
    failed = [r for r in results if r["status"] != "finished"]
    for r in failed:
        print(f"FAILED: {r['label']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def _simulate(args):
    from tomopick.core.simulate import simulate_tomogram
    start = time.time()
    phantom = simulate_tomogram(shape=tuple(args.shape), voxel_size=args.voxel_size,
                                n_particles=args.particles, n_vesicles=args.vesicles,
                                proteins_per_vesicle=args.proteins_per_vesicle,
                                n_filaments=args.filaments, n_gold=args.gold,
                                tilt_range=None if args.no_wedge else tuple(args.tilt_range),
                                snr=args.snr, seed=args.seed)
    os.makedirs(args.outdir, exist_ok=True)
    phantom.save(args.outdir, args.name)
    print(f"{args.name}: {tuple(args.shape)} (z, y, x) at {args.voxel_size} Å/voxel, "
          f"{len(phantom.particles)} particles, {len(phantom.vesicles)} vesicles, "
          f"{len(phantom.filaments)} filaments in {time.time() - start:.1f} s -> "
          f"{os.path.join(args.outdir, args.name)}.mrc")
    return 0


def _evaluate(args):
    from tomopick.core.evaluate import evaluate_picks, format_evaluation
    from tomopick.core.formats import read_coordinates
    from tomopick.core.simulate import load_truth
    try:
        picks = read_coordinates(args.picks, fmt=args.format)
        if args.truth.endswith(".json"):
            truth, _ = load_truth(args.truth)
        else:
            truth = read_coordinates(args.truth)
    except (OSError, ValueError) as err:
        print(f"tomopick evaluate: {err}", file=sys.stderr)
        return 2
    if args.voxel_size:
        picks.voxel_size = args.voxel_size
    print(format_evaluation(evaluate_picks(picks, truth, args.radius)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
