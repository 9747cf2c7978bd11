"""Outreach (issue 5): templates, channel resources, the attempts ledger and the contact state tables."""
