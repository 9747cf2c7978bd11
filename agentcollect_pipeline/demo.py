"""`make demo`: the collection cycle on the embedded default — local sandboxes and SQLite, no credentials."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from agentcollect_pipeline.money import format_money

BILLCOM_POOL_LIMIT = 3  # Bill.com allows 3 requests in flight per org, across all runs


def prepare_dagster_home(home: Path) -> Path:
    """A persistent DAGSTER_HOME on SQLite, so `make ui` shows the demo's runs afterwards."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def set_pool_limits(instance: dg.DagsterInstance) -> None:
    instance.event_log_storage.set_concurrency_slots("billcom", BILLCOM_POOL_LIMIT)


def sandbox_environment(billcom_url: str, credentials: dict[str, str]) -> dict[str, str]:
    return {
        "BILLCOM_BASE_URL": f"{billcom_url}/api/v2",
        "BILLCOM_USERNAME": credentials["username"],
        "BILLCOM_PASSWORD": credentials["password"],
        "BILLCOM_ORG_ID": credentials["org_id"],
        "BILLCOM_DEV_KEY": credentials["dev_key"],
    }


def run_demo(*, invoices: int, customers: int, seed: int, home: Path) -> int:
    from agentcollect_pipeline.sandboxes.billcom import BillComSandbox
    from agentcollect_pipeline.sandboxes.server import serve_in_thread

    prepare_dagster_home(home)
    sandbox = BillComSandbox()
    sandbox.seed(seed=seed, invoices=invoices, customers=customers)
    with serve_in_thread(sandbox.app) as server:
        os.environ.update(sandbox_environment(server.url, sandbox.credentials))
        # Imported after the environment is set: the definitions read their defaults from it.
        from agentcollect_pipeline.definitions import defs
        from agentcollect_pipeline.warehouse import collections_schema as cs
        from agentcollect_pipeline.warehouse import schema

        instance = dg.DagsterInstance.get()
        set_pool_limits(instance)
        print(f"Bill.com sandbox on {server.url} seeded with {customers} customers and {invoices} invoices")
        result = defs.resolve_job_def("collection_cycle").execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        warehouse = defs.resources["warehouse"].get_warehouse()
        print(f"\ncollection_cycle run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}")
        print(f"project database: {warehouse.engine.url.render_as_string(hide_password=True)}")
        for table in (
            schema.billcom_customers,
            schema.billcom_customer_contacts,
            schema.billcom_invoices,
            schema.billcom_received_payments,
            schema.billcom_received_payment_lines,
        ):
            total = warehouse.count(table)
            flagged = (
                warehouse.count(table, table.c.validation_status != "valid")
                if "validation_status" in table.c
                else 0
            )
            print(f"  {table.name:<32} {total:>7} rows  ({flagged} flagged invalid/warning)")
        for table in (cs.invoice_eligibility, cs.collection_cases, cs.ar_aging, cs.cases):
            print(f"  {table.name:<32} {warehouse.count(table):>7} rows")
        with warehouse.engine.connect() as conn:
            eligible = conn.execute(
                sa.text(
                    "select e.currency, count(*), sum(i.amount_due_cents) from invoice_eligibility e "
                    "join billcom_invoices i on i.invoice_id = e.invoice_id "
                    "where e.eligible group by e.currency order by e.currency"
                )
            ).all()
            reasons = conn.execute(
                sa.text(
                    "select reason, count(*) from invoice_eligibility where not eligible "
                    "group by reason order by count(*) desc"
                )
            ).all()
        print("\neligible for collection:")
        for currency, count, due_cents in eligible:
            print(f"  {currency}: {count} invoices, {format_money(due_cents, currency)} due")
        print("not collected, by first reason:")
        for reason, count in reasons:
            print(f"  {reason:<32} {count:>7}")
        print(f"\nDAGSTER_HOME={os.environ['DAGSTER_HOME']}")
        print("Open the UI on these runs, with the sandbox running so you can materialize again: make ui")
        return 0 if result.success else 1


def run_ui(*, invoices: int, customers: int, seed: int, home: Path, port: int, sandbox_port: int) -> int:
    """`make ui`: the Dagster UI on the demo's instance, with a Bill.com sandbox to sync from."""
    import subprocess
    import sys

    from agentcollect_pipeline.sandboxes.billcom import BillComSandbox
    from agentcollect_pipeline.sandboxes.server import serve_in_thread

    prepare_dagster_home(home)
    sandbox = BillComSandbox()
    sandbox.seed(seed=seed, invoices=invoices, customers=customers)
    with serve_in_thread(sandbox.app, port=sandbox_port) as server:
        environment = {**os.environ, **sandbox_environment(server.url, sandbox.credentials)}
        print(f"Bill.com sandbox on {server.url}; Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops both)")
        dagster = Path(sys.executable).with_name("dagster")
        command = [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
        try:
            return subprocess.call(command, env=environment)
        except KeyboardInterrupt:
            return 0
