"""The vend path: the API's handler, serving a connection's token from the table (or a
container's memory), and invoking the provider function when it must be refreshed. Nothing
here imports the refresh side (tests/unit/test_layout.py)."""
