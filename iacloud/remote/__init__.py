"""`iacloud --api URL`: the CLI's commands run through `iacloud serve` (client.py, run.py)."""
