"""Entry scripts, one per MLproject step."""
