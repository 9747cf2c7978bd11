"""The Dagster resource that loads `collection_policy.yaml` (rules in agentcollect_pipeline/rules/policy.py)."""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from agentcollect_pipeline.rules.policy import CollectionPolicy, PolicyError, load_policy

POLICY_ENV = "AGENTCOLLECT_POLICY_PATH"
DEFAULT_POLICY_FILE = "collection_policy.yaml"
REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_policy_path(path: str | None) -> Path:
    """Explicit path, else $AGENTCOLLECT_POLICY_PATH, else collection_policy.yaml.

    A relative path is looked up in the working directory first, then at the repository root, so
    `dagster dev`, the tests and the demo find the checked-in file wherever they are started from.
    """
    chosen = path or os.environ.get(POLICY_ENV) or DEFAULT_POLICY_FILE
    candidate = Path(chosen).expanduser()
    if candidate.is_absolute():
        return candidate
    for base in (Path.cwd(), REPO_ROOT):
        if (base / candidate).is_file():
            return (base / candidate).resolve()
    raise PolicyError(
        f"collection policy {chosen!r} not found in {Path.cwd()} or {REPO_ROOT} (set {POLICY_ENV} to its path)"
    )


class CollectionPolicyResource(dg.ConfigurableResource):
    """Which overdue invoices are collected: the checked-in YAML policy, validated strictly at load."""

    path: str | None = Field(
        default=None,
        description=f"policy file; default ${POLICY_ENV} or {DEFAULT_POLICY_FILE} at the repository root",
    )

    def resolved_path(self) -> Path:
        return resolve_policy_path(self.path)

    def load(self) -> CollectionPolicy:
        return load_policy(self.resolved_path())
