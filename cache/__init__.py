"""The HDF5 feature cache: immutable part files of vectors stitched by a small index file, the
commit point (written whole, then renamed). Readers hold one committed version open; writers
hold the cache lock and check the ``commit_id`` they built on."""
