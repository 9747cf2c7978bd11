"""`agentcollect contacts …`: people's decisions about contacts, always recorded with who and why."""

import argparse
import sys


def add_contacts_parser(commands) -> None:
    contacts = commands.add_parser("contacts", help="opt-outs, consent and callback requests of debtor contacts")
    sub = contacts.add_subparsers(dest="contacts_command", required=True)
    clear = sub.add_parser("clear-opt-out", help="lift an opt-out (recorded in opt_out_clearances)")
    consent = sub.add_parser("record-consent", help="record consent for automated texts/calls to a number")
    for parser in (clear, consent):
        parser.add_argument("--channel", required=True, choices=["email", "sms", "voice"] if parser is clear
                            else ["sms", "voice"])
        parser.add_argument("--address", required=True, help="email address or E.164 number")
        parser.add_argument("--by", required=True, help="who decides (recorded)")
    clear.add_argument("--why", required=True, help="why (recorded)")
    consent.add_argument("--source", required=True, help="where the number and consent came from")
    close = sub.add_parser("close-callback", help="close a callback request (the debtor pressed 2), recording who and why")
    close.add_argument("request_id", metavar="ID", help="cbr_… (outreach_plan/outreach_attempts metadata)")
    close.add_argument("--by", required=True, help="who handled it (recorded)")
    close.add_argument("--why", required=True, help="what was done (recorded)")


def contacts_command(args: argparse.Namespace, database_url: str) -> int:
    from agentcollect_pipeline.outreach import ledger
    from agentcollect_pipeline.resources import _warehouse

    store = _warehouse(database_url)
    try:
        if args.contacts_command == "clear-opt-out":
            cleared = ledger.clear_opt_out(store, args.channel, args.address, args.by, args.why)
            if not cleared:
                print(f"no {args.channel} opt-out for that address", file=sys.stderr)
                return 1
            print(f"cleared {cleared} {args.channel} opt-out(s); recorded who and why")
            return 0
        if args.contacts_command == "close-callback":
            if not ledger.close_callback(store, args.request_id, args.by, args.why):
                print(f"no open callback request {args.request_id}", file=sys.stderr)
                return 1
            print(f"callback request {args.request_id} closed; recorded who and why")
            return 0
        consent_id = ledger.record_consent(store, args.channel, args.address, args.source, args.by)
        print(f"consent {consent_id} recorded")
        return 0
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
