"""The collection agent (issue 7): reply classification (`replies`), drafting with guardrails (`composer`)."""
