"""The HDF5 feature cache: immutable part files of vectors (``<cache>.h5.parts``, and view parts
in ``<cache>.h5.views``) stitched by a small index file, ``<cache>.h5``, which is the commit
point: written whole to a temporary file and renamed. Readers hold one committed version open
(``reader``); writers hold the cache lock and check the ``commit_id`` they built on."""
