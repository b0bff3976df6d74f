"""What every stage shares: atomic writes, content hashing, progress callbacks and run folders."""
