"""Flags several commands share."""

import argparse
import json


def model_argument(text):
    """`key=value` -> (key, value), the value read as JSON when it parses."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_model_arg_flag(parser, help="builder argument, e.g. num_experts=8 (repeatable)"):
    """`--model-arg KEY=VALUE`, repeatable: extra zoo builder arguments."""
    parser.add_argument("--model-arg", action="append", type=model_argument, default=[],
                        metavar="KEY=VALUE", help=help)
