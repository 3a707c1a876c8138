"""The coating line: the plant simulator, the plant-history schema and its rows."""
