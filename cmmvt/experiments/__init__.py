"""Experiment tooling over DVC: ablation grids as queued experiments and their report (never imported by the core)."""
