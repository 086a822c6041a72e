"""Prefect flows (composition only) and the `objectron-wds` command."""
