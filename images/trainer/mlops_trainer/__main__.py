"""mlops-trainer: the command the TrainingJob pods run.

    mlops-trainer prepare [--config FILE] [--result PATH]
    mlops-trainer train   [--config FILE] [--result PATH]
    mlops-trainer trial   [--config FILE] [--index N] [--result PATH]
    mlops-trainer verify  --artifact DIR|URI --sha256 HEX [--result PATH]
    mlops-trainer fetch   --artifact s3://URI --sha256 HEX --dest DIR [--result PATH]
    mlops-trainer ship-logs --dir DIR --to s3://URI [--interval SECONDS] [--result PATH]
    mlops-trainer purge   --artifact s3://URI --sha256 HEX --namespace NS --training-job NAME [--result PATH]

Config: JSON from --config FILE or env MLOPS_CONFIG (see `config`). The result is one JSON
line on stdout and the termination message (--result, env MLOPS_RESULT_PATH, default
/dev/termination-log). Exit codes: 0 success (also a model that fails its gates), 2 bad input
(permanent: the Job fails at once), 3 artifact verification failed, 1 transient or unexpected
(retried), 143 stopped by SIGTERM before it finished (retried; the result says Terminated).
Logs are JSON lines on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, Final

from mlops_trainer import logs
from mlops_trainer.config import load_config
from mlops_trainer.errors import EXIT_OK, EXIT_TRANSIENT, BadInput, Terminated, TrainerError
from mlops_trainer.result import emit_result, result_path

ENV_INDEX: Final = "JOB_COMPLETION_INDEX"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--result",
        help="where to write the result JSON (default: env MLOPS_RESULT_PATH or /dev/termination-log)",
    )
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument("--config", help="config JSON file (default: env MLOPS_CONFIG)")

    parser = argparse.ArgumentParser(
        prog="mlops-trainer", description="Train, tune and verify scikit-learn models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "prepare", parents=[common, with_config], help="load, validate and split the data once, as Parquet"
    )
    commands.add_parser("train", parents=[common, with_config], help="fit, evaluate and write the artifact")
    trial = commands.add_parser("trial", parents=[common, with_config], help="run one tuning trial")
    trial.add_argument("--index", type=int, help=f"trial index (default: env {ENV_INDEX})")
    verify = commands.add_parser(
        "verify", parents=[common], help="check an artifact's digest and that it predicts"
    )
    verify.add_argument("--artifact", required=True, help="artifact directory, or its pvc:// or s3:// URI")
    verify.add_argument("--sha256", required=True, help="expected hex sha256 of model.skops")
    fetch = commands.add_parser(
        "fetch", parents=[common], help="download an s3:// artifact for the server and check its sha256"
    )
    fetch.add_argument("--artifact", required=True, help="the artifact's s3:// URI")
    fetch.add_argument("--sha256", required=True, help="expected hex sha256 of model.skops")
    fetch.add_argument("--dest", required=True, help="directory to put model.skops and model.json in")
    ship = commands.add_parser(
        "ship-logs", parents=[common], help="move the server's prediction log to s3:// in immutable windows"
    )
    ship.add_argument("--dir", required=True, help="the server's --prediction-log directory")
    ship.add_argument("--to", required=True, help="s3:// prefix; objects go to <to>/<host>/")
    ship.add_argument("--interval", type=float, default=60.0, help="seconds per window (default 60)")
    purge = commands.add_parser(
        "purge", parents=[common], help="delete a retired version's s3:// artifact, if its run wrote it"
    )
    purge.add_argument("--artifact", required=True, help="the artifact's s3:// URI")
    purge.add_argument("--sha256", required=True, help="sha256 of model.skops the ModelVersion records")
    purge.add_argument("--namespace", required=True, help="the ModelVersion's namespace")
    purge.add_argument("--training-job", required=True, help="the TrainingJob that wrote the artifact")
    return parser


def _trial_index(option: int | None, env: Mapping[str, str]) -> int:
    if option is not None:
        return option
    raw = env.get(ENV_INDEX)
    if raw is None:
        raise BadInput(f"no trial index: set env {ENV_INDEX} or pass --index")
    try:
        return int(raw)
    except ValueError as e:
        raise BadInput(f"env {ENV_INDEX} is not an integer: {raw!r}") from e


def run(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    if args.command == "verify":
        from mlops_trainer.verify import run_verify

        return run_verify(args.artifact, args.sha256, env)
    if args.command == "fetch":
        from mlops_trainer.fetch import run_fetch

        return run_fetch(args.artifact, args.sha256, args.dest, env)
    if args.command == "ship-logs":
        from mlops_trainer.shiplogs import run_ship_logs

        return run_ship_logs(args.dir, args.to, args.interval, env)
    if args.command == "purge":
        from mlops_trainer.purge import run_purge

        return run_purge(args.artifact, args.sha256, args.namespace, args.training_job, env)
    config = load_config(args.config, env)
    if args.command == "trial":
        from mlops_trainer.tuning import run_trial

        return run_trial(config, _trial_index(args.index, env), env)
    if args.command == "prepare":
        from mlops_trainer.prepared import run_prepare

        return run_prepare(config, env)
    from mlops_trainer.train import run_train

    return run_train(config, env)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name} before it finished")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one subcommand; return the process exit code."""
    logs.configure()
    environ = os.environ if env is None else env
    args = _parser().parse_args(argv)
    path = result_path(args.result, environ)
    # SIGTERM (a pod deleted gracefully: eviction, drain) ends the command with Terminated; once
    # the command is over it is ignored, so a finished result is always written whole.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        try:
            result = run(args, environ)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        code = EXIT_OK
    except (TrainerError, Terminated) as e:
        logs.log("Failed", level=logging.ERROR, command=args.command, reason=e.reason, message=str(e))
        result, code = {"ok": False, "reason": e.reason, "message": str(e)}, e.exit_code
    except Exception as e:  # unexpected: report it, exit 1 so the Job retries
        logs.logger.exception("Failed unexpectedly", extra={"fields": {"command": args.command}})
        result = {"ok": False, "reason": "Internal", "message": f"{type(e).__name__}: {e}"}
        code = EXIT_TRANSIENT
    emit_result(result, path)
    # The process's peak resident memory (Linux reports KiB): what the training benchmark reads
    # from each pod's log (tests/benchmarks/training.py).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    logs.log("Finished", command=args.command, exitCode=code, peakMemoryBytes=peak)
    signal.signal(signal.SIGTERM, previous)
    return code


if __name__ == "__main__":
    sys.exit(main())
