"""``learnstream serve``: the live global model over HTTP (Starlette on uvicorn)."""

from __future__ import annotations

import argparse

from stream import cliargs
from stream.config import ServeSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the live global model over HTTP (predict, model, events, metrics, page)",
        description="Answer POST /v1/predict with the newest global model: it starts from the "
        "newest checkpoint and swaps in each version published on the model topic. "
        "docs/serving.md documents the API.",
    )
    cliargs.add_settings(parser, ServeSettings, skip=("topics.group_id",))
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> ServeSettings:
    return cliargs.build(ServeSettings, args)


def run(args: argparse.Namespace) -> int:
    from stream.serve.server import run_server

    run_server(settings_from(args))
    return 0
