"""Training recipes: one command each, `python -m recipes.<name>`."""
