"""The command-line interface: a thin layer of click commands over iacloud.engine."""
