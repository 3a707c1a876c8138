"""Thickness recommendations: the optimiser, the runs file, the reports, the planning of each run
and the closed-loop evaluation on simulated plants."""
