"""The HDF5 feature cache: parts and index, views, the stat index, incremental plans, compaction, reading."""
