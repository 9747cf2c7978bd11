"""The `agentcollect` command."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentcollect", description="AgentCollect pipeline tools")
    commands = parser.add_subparsers(dest="command", required=True)

    sandbox = commands.add_parser("sandbox", help="run a local sandbox of an outside service")
    sandbox.add_argument("service", choices=["billcom", "qbo", "netsuite", "twilio", "sendgrid", "llm"])
    sandbox.add_argument("args", nargs=argparse.REMAINDER, help="service options, e.g. --port 8081 --seed 7")

    demo = commands.add_parser(
        "demo", help="sandboxes + SQLite: collection_cycle, a first outreach wave, one payment posted to Bill.com"
    )
    demo.add_argument("--invoices", type=int, default=3000)
    demo.add_argument("--customers", type=int, default=600)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--ar-source", choices=["billcom", "qbo", "netsuite"], default="billcom",
                      help="which AR source's sandbox the demo runs on")
    demo.add_argument("--llm", action="store_true",
                      help="also start the local LLM sandbox: the composer drafts with it (within the guardrails)")
    demo.add_argument("--dagster-home", type=Path, default=Path(".dagster_home"))

    ui = commands.add_parser(
        "ui", help="the Dagster UI and daemon with the Bill.com/Twilio/SendGrid sandboxes and the webhook receiver"
    )
    ui.add_argument("--invoices", type=int, default=3000)
    ui.add_argument("--customers", type=int, default=600)
    ui.add_argument("--seed", type=int, default=7)
    ui.add_argument("--ar-source", choices=["billcom", "qbo", "netsuite"], default="billcom")
    ui.add_argument("--dagster-home", type=Path, default=Path(".dagster_home"))
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--sandbox-port", type=int, default=8081, help="the AR source's sandbox")
    ui.add_argument("--twilio-port", type=int, default=8082)
    ui.add_argument("--sendgrid-port", type=int, default=8083)
    ui.add_argument("--webhooks-port", type=int, default=8090, help="webhook receiver (POST /webhooks/payments)")

    payments = commands.add_parser("payments", help="payment events: import bank files, review what needs a person")
    payment_commands = payments.add_subparsers(dest="payments_command", required=True)
    payments_import = payment_commands.add_parser(
        "import", help="import a remittance/lockbox CSV: all rows or none, errors by line number"
    )
    payments_import.add_argument("file", type=Path)
    review = payment_commands.add_parser(
        "review", help="list open needs_review items; resolve one (post it to an invoice) or dismiss it"
    )
    review.add_argument("--all", action="store_true", help="list resolved and dismissed items too")
    review_commands = review.add_subparsers(dest="review_command")
    resolve = review_commands.add_parser("resolve", help="post the item's payment to the invoice you choose")
    dismiss = review_commands.add_parser("dismiss", help="close the item; its payment is never posted")
    for decision in (resolve, dismiss):
        decision.add_argument("review_id", type=int, metavar="ID")
        decision.add_argument("--by", required=True, help="who decides (recorded)")
        decision.add_argument("--why", required=True, help="why (recorded)")
    resolve.add_argument("--post-to", required=True, metavar="INVOICE_ID", help="Bill.com invoice id (00e…)")

    from agentcollect_pipeline.outreach.cli import add_contacts_parser

    add_contacts_parser(commands)

    from agentcollect_pipeline.agent.disputes import add_disputes_parser

    add_disputes_parser(commands)

    webhooks = commands.add_parser("webhooks", help="serve the webhook receiver (POST /webhooks/payments)")
    webhooks.add_argument("--host", default="127.0.0.1")
    webhooks.add_argument("--port", type=int, default=8090)

    args = parser.parse_args(argv)
    if args.command == "contacts":
        from agentcollect_pipeline.outreach.cli import contacts_command

        return contacts_command(args, _database_url())
    if args.command == "disputes":
        from agentcollect_pipeline.agent.disputes import disputes_command

        return disputes_command(args, _database_url())
    if args.command == "payments":
        return _payments(args)
    if args.command == "webhooks":
        return _webhooks(args)
    if args.command == "sandbox":
        # Each sandbox's app module has main(argv): seed, serve, print the URL.
        return importlib.import_module(f"agentcollect_pipeline.sandboxes.{args.service}.app").main(args.args)
    if args.command == "demo":
        from agentcollect_pipeline.demo import run_demo

        return run_demo(invoices=args.invoices, customers=args.customers, seed=args.seed, home=args.dagster_home,
                        ar_source=args.ar_source, llm=args.llm)
    if args.command == "ui":
        from agentcollect_pipeline.demo import run_ui

        return run_ui(
            invoices=args.invoices,
            customers=args.customers,
            seed=args.seed,
            home=args.dagster_home,
            port=args.port,
            sandbox_port=args.sandbox_port,
            twilio_port=args.twilio_port,
            sendgrid_port=args.sendgrid_port,
            webhooks_port=args.webhooks_port,
            ar_source=args.ar_source,
        )
    parser.error(f"unknown command {args.command}")
    return 2


def _database_url() -> str:
    import os

    from agentcollect_pipeline.settings import default_database_url

    return os.environ.get("AGENTCOLLECT_DATABASE_URL") or default_database_url()


def _payments(args: argparse.Namespace) -> int:
    if args.payments_command == "review":
        from agentcollect_pipeline.payments.review_cli import review_command

        return review_command(args, _database_url())
    from agentcollect_pipeline.payments.intake import import_csv
    from agentcollect_pipeline.resources import _warehouse

    report = import_csv(_warehouse(_database_url()), args.file)
    if report.errors:
        for error in report.errors:
            print(f"{args.file}: {error}", file=sys.stderr)
        print(f"{args.file}: nothing imported ({len(report.errors)} error(s))", file=sys.stderr)
        return 1
    print(f"{args.file}: {report.stored} payment event(s) stored, {report.duplicates} already known")
    return 0


def _webhooks(args: argparse.Namespace) -> int:
    from agentcollect_pipeline.sandboxes.server import serve_forever
    from agentcollect_pipeline.webhooks.app import receiver_from_environment

    try:
        receiver = receiver_from_environment(_database_url())
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    serve_forever(receiver, args.host, args.port, on_started=lambda url: print(f"webhook receiver on {url}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
