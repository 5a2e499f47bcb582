"""Analysis: load results (never writing to them), metrics, the analytic model, plots."""
