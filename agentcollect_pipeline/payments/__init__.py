"""Payments lane (issue 6): intake of payment events, exactly-once posting to the AR source, notes."""
