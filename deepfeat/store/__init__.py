"""Store: the on-disk embedding cache -- its format, readers, writers and maintenance.

A cache is an HDF5 file of feature spaces, each a matrix of rows keyed by the content hash
of the input they embed (see docs/cache-format.md). This package is the one owner of
that format and imports no torch, so that tools that only read, check or repair caches
stay light. Its modules, one job each:

* :mod:`~deepfeat.store.format` -- the format's constants (names, suffixes, limits);
* :mod:`~deepfeat.store.layout` -- what a valid file looks like, checked as it is read;
* :mod:`~deepfeat.store.journal` -- the checksummed journal of new rows, and its writer;
* :mod:`~deepfeat.store.keyindex`, :mod:`~deepfeat.store.index` -- key -> row lookups;
* :mod:`~deepfeat.store.reader` -- :class:`CacheReader`, reading rows;
* :mod:`~deepfeat.store.writer` -- :class:`FeatureCache`, adding and committing rows;
* :mod:`~deepfeat.store.segments`, :mod:`~deepfeat.store.rows_file` -- the manifest of
  segments, and writing one file of rows;
* :mod:`~deepfeat.store.compaction` -- segments merged back into one file;
* :mod:`~deepfeat.store.pending` -- journals of writers without the lock (Ray actors);
* :mod:`~deepfeat.store.verify`, :mod:`~deepfeat.store.repair` -- checking and salvage;
* :mod:`~deepfeat.store.lock`, :mod:`~deepfeat.store.atomic` -- locks, atomic replaces.

The names below are imported on first use (PEP 562): :mod:`deepfeat.store.format`, which
:mod:`deepfeat.featurize.hashing` takes the key length from, stays a module of constants
that costs nothing to import.
"""

from __future__ import annotations

from deepfeat.lazy import lazy_exports

_EXPORTS = {
    "FORMAT": "deepfeat.store.format",
    "FORMAT_VERSION": "deepfeat.store.format",
    "KEY_LENGTH": "deepfeat.store.format",
    "CacheReader": "deepfeat.store.reader",
    "FeatureCache": "deepfeat.store.writer",
    "JournalRecord": "deepfeat.store.journal",
    "JournalWriter": "deepfeat.store.journal",
    "KeyIndex": "deepfeat.store.keyindex",
    "WriterLock": "deepfeat.store.lock",
    "merge_orphan_journals": "deepfeat.store.pending",
    "open_pending_journal": "deepfeat.store.pending",
    "pending_dir": "deepfeat.store.pending",
    "read_records": "deepfeat.store.journal",
    "repair_cache": "deepfeat.store.repair",
    "scan_journal": "deepfeat.store.journal",
    "verify_cache": "deepfeat.store.verify",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
