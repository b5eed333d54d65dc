"""The ``raysweep`` command: parses (:mod:`~raysweep.cli.parser`), calls the API
(:mod:`~raysweep.cli.commands`), maps errors to one line and exit 2
(:mod:`~raysweep.cli.errors`). Ctrl-C and SIGTERM stop a launch and say how to resume it
(exit 130). Third-party set-up chatter (MLflow's database migrations, Ray's start-up lines) is
hidden unless ``--debug``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from raysweep.cli.commands import sweep_name_of
from raysweep.cli.errors import USER_ERRORS, environment_problem, print_error
from raysweep.cli.parser import COMMAND_TABLE, build_parser

#: name -> (summary, handler), for code that lists or dispatches commands.
COMMANDS: dict[str, tuple[str, Callable]] = {
    name: (command.summary, command.handler) for name, command in COMMAND_TABLE.items()
}
#: Loggers whose INFO lines are set-up noise on a normal run.
NOISY_LOGGERS = ("mlflow", "alembic", "ray", "ray.tune", "filelock")


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def quiet_libraries(debug: bool) -> None:
    """MLflow's migration lines, alembic's, Ray's start-up and token notices: shown with
    --debug only (RAYSWEEP_DEBUG tells the driver's ray.init too)."""
    if debug:
        os.environ["RAYSWEEP_DEBUG"] = "1"
        return
    # MLflow sets its loggers' level when first imported (lazily, after this): tell it too.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    # "process_trial_result took 0.5 s": the driver recording a run in MLflow, by design.
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        import argcomplete

        argcomplete.autocomplete(parser)
    except ImportError:  # completion is a convenience, never a requirement
        pass
    args = parser.parse_args(argv)
    quiet_libraries(args.debug)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # e.g. `ray job stop`, a cluster shutdown
    try:
        return COMMAND_TABLE[args.command].handler(args)
    except USER_ERRORS as error:
        return user_error(args, str(error), error)
    except KeyboardInterrupt:
        hint = ""
        if args.command in ("launch", "resume"):
            hint = f"; `raysweep resume {sweep_name_of(args)}` finishes what is missing"
        print(f"raysweep: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as error:
        problem = environment_problem(error)
        if problem is None:
            raise
        return user_error(args, problem, error)
    finally:
        signal.signal(signal.SIGTERM, previous)


def user_error(args: object, message: str, error: BaseException) -> int:
    """Print the error (or, with --debug, raise it for the traceback); exit status 2."""
    if getattr(args, "debug", False):
        raise error
    return print_error(message)


__all__ = ["COMMANDS", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
