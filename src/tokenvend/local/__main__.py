"""`python -m tokenvend.local`: the same as `tokenvend local`, plus `--parameter-overrides`
(as `sam local` takes them) to set the template's parameters."""

from __future__ import annotations

import argparse
import sys

from . import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokenvend.local",
        description="Run the whole tokenvend stack on this machine (see `tokenvend local`).",
    )
    parser.add_argument("--stack", default="tokenvend", help="stack name (default tokenvend)")
    parser.add_argument("--region", default=None, help="default: AWS_REGION, or us-east-1")
    parser.add_argument("--api-port", type=int, default=3000)
    parser.add_argument("--lambda-port", type=int, default=3001)
    parser.add_argument("--aws-port", type=int, default=4566)
    parser.add_argument("--sandbox-port", type=int, default=3002)
    parser.add_argument("--no-sandbox", dest="sandbox", action="store_false")
    parser.add_argument("--refresh-every", type=float, default=None, metavar="SECONDS")
    parser.add_argument(
        "--docker-bridge",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="also listen on the docker bridge (docker0's address, or ADDRESS)",
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="template parameters, e.g. CoolDownSeconds=1",
    )
    parser.add_argument(
        "--api-type",
        choices=["rest", "http"],
        default=None,
        help="the template's ApiType: rest (the default) or http (an HTTP API)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start with empty local AWS state (users, keys, connections, tokens); the "
        "previous one is kept as .tokenvend/state/aws.pickle.old-<time>",
    )
    args = parser.parse_args(argv)
    parameters = {}
    for item in args.parameter_overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--parameter-overrides: expected NAME=VALUE, got {item!r}")
        parameters[name] = value
    if args.api_type is not None:
        if parameters.get("ApiType", args.api_type.upper()) != args.api_type.upper():
            parser.error("--api-type and --parameter-overrides ApiType=... disagree")
        parameters["ApiType"] = args.api_type.upper()
    return run(
        stack=args.stack,
        region=args.region,
        api_port=args.api_port,
        lambda_port=args.lambda_port,
        aws_port=args.aws_port,
        sandbox_port=args.sandbox_port,
        sandbox=args.sandbox,
        refresh_every=args.refresh_every,
        parameters=parameters,
        docker_bridge=args.docker_bridge,
        fresh=args.fresh,
    )


if __name__ == "__main__":
    sys.exit(main())
