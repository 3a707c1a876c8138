"""How a sevi or coating process runs: the torch device it picks, its thread policy, typed
configuration overrides from the command line, and the typed errors commands turn into one line.
Imports nothing of the project."""
