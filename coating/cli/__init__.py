"""The ``coating`` command line."""
