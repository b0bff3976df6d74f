"""The HDF5 feature cache: immutable part files of vectors, stitched by a small index file.

Layout of one cache, ``<dataset>-<backbone>-<pool>-<id>.h5``:

* ``<cache>.h5.parts/*.h5`` hold the vectors: each part has ``features`` (n x D float32) and
  ``content_sha256`` (n), every chunk with a fletcher32 checksum, is written once under a
  temporary name, fsynced and renamed, and is never modified afterwards. Every rank of a
  distributed run and every incremental run writes parts of its own.
* ``<cache>.h5`` is the index: paths, labels, splits, content hashes, the stat of each file
  (size, mtime_ns, inode, ctime_ns: git's index), failures, attributes, and ``features``, an HDF5 virtual
  dataset whose rows map onto ranges of the parts, so ``h5py.File(cache)["features"]`` reads as
  one N x D array, in the order of the paths. It is there for people who open the file with
  plain h5py; tlx's own readers hold the parts open instead (``tlx.cache.reader``).

The index is the commit point: it is written whole to a temporary file and atomically renamed.
A part that no index references is work of an unfinished run; the next run (holding the lock)
takes its vectors back, so a killed run loses at most its last unflushed rows. Adding k images
writes k vectors plus the index's metadata; removing images writes only the index. Parts that
no row uses any more are deleted after the commit (a reader that holds them open keeps
reading them: see ``tlx.cache.reader``); ``tlx cache compact`` rewrites all rows into
one part when many small parts or many dead rows have piled up.

Every index carries a ``commit_id``. A run notes the id it builds on (under the lock) and its
commit checks, right before the rename, that this id is still the current one: a second writer
that got in anyway (its lock file deleted, a file system that ignores locks) cannot silently
overwrite a commit it did not see. After a commit, only parts this run knew of are deleted, so
another writer's uncommitted parts survive. Disk errors raise :class:`~tlx.errors.StorageError`.

The code is split by job, and its imports run one way (each module imports only those above it):

* ``h5format``: format constants, paths (``parts_dir``, ``views_dir``), string and array
  datasets, virtual rows, :class:`UnreadableCacheError`;
* ``parts``: part files of either kind (feature parts keyed by content hash, view parts by
  content hash and view index) and the one :class:`PartWriter` that writes both;
* ``viewtable``: the index's ``views`` group; ``index``: rows, failures, reading, committing;
* ``lock``: :class:`CacheLock`; ``catalog``: cache file names, listing and picking caches;
* ``views``: which views a run makes and where their vectors come from (built on ``parts``);
* ``reader``: the snapshot every reader uses (``features``: ``load_features`` and ``Features``;
  ``rows``: row views read block by block); ``verify``: ``tlx cache verify``;
* ``statindex`` and ``incremental``: what a re-run must read; ``compact``: ``tlx cache compact``;
  ``space``: what identifies a feature space; ``duplicates``: copies across splits and classes.
"""
