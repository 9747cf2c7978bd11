"""The `agentcollect` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentcollect", description="AgentCollect pipeline tools")
    commands = parser.add_subparsers(dest="command", required=True)

    sandbox = commands.add_parser("sandbox", help="run a local sandbox of an outside service")
    sandbox.add_argument("service", choices=["billcom"])
    sandbox.add_argument("args", nargs=argparse.REMAINDER, help="service options, e.g. --port 8081 --seed 7")

    demo = commands.add_parser("demo", help="run collection_cycle once on the sandboxes and SQLite")
    demo.add_argument("--invoices", type=int, default=3000)
    demo.add_argument("--customers", type=int, default=600)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--dagster-home", type=Path, default=Path(".dagster_home"))

    ui = commands.add_parser("ui", help="open the Dagster UI with a Bill.com sandbox to sync from")
    ui.add_argument("--invoices", type=int, default=3000)
    ui.add_argument("--customers", type=int, default=600)
    ui.add_argument("--seed", type=int, default=7)
    ui.add_argument("--dagster-home", type=Path, default=Path(".dagster_home"))
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--sandbox-port", type=int, default=8081)

    args = parser.parse_args(argv)
    if args.command == "sandbox":
        from agentcollect_pipeline.sandboxes.billcom.app import main as billcom_sandbox

        return billcom_sandbox(args.args)
    if args.command == "demo":
        from agentcollect_pipeline.demo import run_demo

        return run_demo(invoices=args.invoices, customers=args.customers, seed=args.seed, home=args.dagster_home)
    if args.command == "ui":
        from agentcollect_pipeline.demo import run_ui

        return run_ui(
            invoices=args.invoices,
            customers=args.customers,
            seed=args.seed,
            home=args.dagster_home,
            port=args.port,
            sandbox_port=args.sandbox_port,
        )
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
