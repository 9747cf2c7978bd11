"""The collection agent (issue 7): every outgoing message (`composer`, `guardrails`, `templates/`, `llm`) and
every reply understood (`replies`, `inbound_email`) with its effect (`effects`, `disputes`)."""
