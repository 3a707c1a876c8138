"""The ``sevi`` command line: one module per subcommand and ``main``, the only layer that turns a
typed error into a one-line message and an exit status."""
