"""Benchmarks of the delivery engine: `python -m bench` (all four), `--only 1,3`, `--quick` for a smoke check.

They print figures, ratios and whether each goal was met; they never assert speed. See bench/__main__.py.
"""
