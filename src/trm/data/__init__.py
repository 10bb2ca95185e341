"""The data layer: the official on-disk layout (`layout`), batches and sampling (`sampling`), grid symmetries
and the ARC canvas (`grids`), and lazily computed rows (`recipe`). Tasks build on it; it imports no task."""

from trm.data.layout import (
    FIELDS,
    IGNORE_LABEL,
    SET_NAME,
    DatasetMetadata,
    DatasetWriter,
    PuzzleDataset,
    load_split,
    read_identifiers,
    write_identifiers,
    write_json,
)
from trm.data.recipe import ROWS_RECIPE
from trm.data.sampling import TrainSampler, collate, test_batches
from trm.errors import DataError

__all__ = [
    "FIELDS",
    "IGNORE_LABEL",
    "ROWS_RECIPE",
    "SET_NAME",
    "DataError",
    "DatasetMetadata",
    "DatasetWriter",
    "PuzzleDataset",
    "TrainSampler",
    "collate",
    "load_split",
    "read_identifiers",
    "test_batches",
    "write_identifiers",
    "write_json",
]
