"""Markdown reports: each readable on its own, each built from evidence files
(never from memory), so what a report says is what the gate saw."""
