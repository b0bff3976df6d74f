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
* ``reader``: the snapshot every reader uses.

This module gathers the names the rest of tlx uses, so ``from tlx.cache import store`` keeps
working; it defines nothing of its own.
"""

from .catalog import (
    cache_file_name,
    cache_file_prefix,
    default_cache_dir,
    list_caches,
    now_iso,
    pick_cache,
    updated_time,
)
from .h5format import (
    FORMAT_VERSION,
    HASH,
    READABLE_FORMATS,
    STAT_FIELDS,
    STR,
    UnreadableCacheError,
    check_format,
    decode_strings,
    not_a_cache,
    open_h5,
    parts_dir,
    read_attrs,
    virtual_rows,
)
from .h5format import rows_per_chunk as _rows_per_chunk
from .index import (
    UNCHECKED,
    CacheIndex,
    CommitConflict,
    Failures,
    Row,
    check_parts,
    commit_id,
    index_of,
    orphan_parts,
    read_index,
    remove_stale_temporaries,
    write_index,
)
from .lock import CacheLock
from .parts import (
    FEATURE_PARTS,
    VIEW_PARTS,
    PartKind,
    PartWriter,
    merge_parts,
    part_datasets,
    part_sizes,
    read_part_hashes,
    remove_unused_files,
    remove_unused_parts,
    write_part,
)

__all__ = [
    "FEATURE_PARTS",
    "FORMAT_VERSION",
    "HASH",
    "READABLE_FORMATS",
    "STAT_FIELDS",
    "STR",
    "UNCHECKED",
    "VIEW_PARTS",
    "CacheIndex",
    "CacheLock",
    "CommitConflict",
    "Failures",
    "PartKind",
    "PartWriter",
    "Row",
    "UnreadableCacheError",
    "_rows_per_chunk",
    "cache_file_name",
    "cache_file_prefix",
    "check_format",
    "check_parts",
    "commit_id",
    "decode_strings",
    "default_cache_dir",
    "index_of",
    "list_caches",
    "merge_parts",
    "not_a_cache",
    "now_iso",
    "open_h5",
    "orphan_parts",
    "part_datasets",
    "part_sizes",
    "parts_dir",
    "pick_cache",
    "read_attrs",
    "read_index",
    "read_part_hashes",
    "remove_stale_temporaries",
    "remove_unused_files",
    "remove_unused_parts",
    "updated_time",
    "virtual_rows",
    "write_index",
    "write_part",
]
