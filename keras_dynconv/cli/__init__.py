"""`keras-dynconv`: the command line (`python -m keras_dynconv.cli` works too).

Each command lives in its own module with `add_parser(subparsers)` and `run(args)`.
User mistakes (a bad flag value, a missing file) end with a one-line message and
exit code 2, never a traceback.
"""

import argparse
import sys

from keras_dynconv.cli import bench as bench_command
from keras_dynconv.cli import convert as convert_command
from keras_dynconv.cli import export as export_command
from keras_dynconv.cli import models as models_command
from keras_dynconv.cli import predict as predict_command
from keras_dynconv.cli import train as train_command

COMMANDS = (models_command, predict_command, convert_command, export_command, train_command,
            bench_command)
EXIT_USAGE = 2
RESUMABLE_COMMANDS = ("train", "finetune")


class UserError(Exception):
    """A mistake in the command line or its inputs: reported without traceback."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-dynconv",
        description="Dynamic convolutions for Keras 3: list, describe, run, convert, export, train, "
        "fine-tune and benchmark zoo models. "
        "The Keras backend is KERAS_BACKEND (tensorflow, jax or torch).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
        return 0
    except (ValueError, FileNotFoundError, UserError) as error:
        # Library errors name the argument and the value: that is the message.
        print(f"keras-dynconv {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Training commands back up every epoch; others simply stop.
        resumable = args.command in RESUMABLE_COMMANDS
        hint = (
            "; run the same command again to resume from the last finished epoch"
            if resumable else ""
        )
        print(f"keras-dynconv {args.command}: interrupted{hint}.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
