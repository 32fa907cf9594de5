"""All-null columns of the capture schema, without allocating per batch.

The decoder leaves most columns null in most batches, and the tail reader
gives back the columns a unit left out as nulls. pa.nulls allocates and
zeroes fresh buffers per column and call (measured: more than compressing
or decompressing them); here every column is a slice of an array kept per
column, all on one shared zero buffer (also counted once by
get_total_buffer_size).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from capture.schema import SCHEMA


class NullColumns:
    def __init__(self) -> None:
        self._zeros = pa.py_buffer(b"")
        self._kept: dict[str, pa.Array] = {}

    def zeros(self, n: int) -> pa.Buffer:
        """A zero-filled buffer of at least 8 * (n + 1) bytes: shared, never written to."""
        if self._zeros.size < 8 * n + 8:
            self._zeros = pa.py_buffer(np.zeros(max(8 * n + 8, 1 << 20), np.uint8))
            self._kept.clear()
        return self._zeros

    def column(self, name: str, n: int) -> pa.Array:
        """An all-null column `name` of the capture schema, n rows."""
        zeros = self.zeros(n)
        kept = self._kept.get(name)
        if kept is None:
            typ, capacity = SCHEMA.field(name).type, zeros.size // 8 - 1
            if pa.types.is_dictionary(typ):
                indices = pa.Array.from_buffers(typ.index_type, capacity, [zeros] * 2, null_count=capacity)
                kept = pa.DictionaryArray.from_arrays(indices, pa.array([], typ.value_type))
            else:
                children = [pa.array([], typ.value_type)] if pa.types.is_list(typ) else None
                kept = pa.Array.from_buffers(typ, capacity, [zeros] * typ.num_buffers, null_count=capacity,
                                             children=children)
            self._kept[name] = kept
        return kept.slice(0, n)
