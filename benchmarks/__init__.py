"""rxflow's benchmarks: ``python -m benchmarks [--quick] [--only NAME]``.

Every case measures rxflow against a baseline in the same run and prints one JSON object
per line (see :mod:`benchmarks.__main__`). Figures are never asserted in tests.
"""
