"""What every layer may import: one-line errors (errors.py), seeded random streams (seeding.py),
atomic JSON files (io.py) and the table of built-in setups (setups.py). Nothing here imports torch
models, data, the engine or the analysis."""
