"""The fit-head run: which rows train and validate, fused caches, the sweep, the run folder."""
