"""The hook catalog (programs/<hook>.c + programs/<hook>.yaml) and the C<->Python contract.

- ``hooks``: load_catalog() reads every program with its sidecar into HookSpecs;
- ``contract``: every constant shared with programs/include/krsid.h, parsed from
  it, plus the checks of what the sidecars restate (action values, slots).

The names below are the package's interface; import them from ``krsid.catalog``.
"""

from krsid.catalog.contract import Contract, parse_contract
from krsid.catalog.hooks import (
    BASENAME_HEAD,
    BYTES_FIELD_TYPES,
    DIRS_MAP,
    FIELD_TYPES,
    HEADER_FILE,
    HEADER_SIDECAR,
    OPTION_TYPES,
    PRIORITIES,
    TEMPLATE_FIELD_RE,
    Catalog,
    EnrichSpec,
    FieldSpec,
    HookSpec,
    MapSize,
    OptionSpec,
    PolicyField,
    SetMap,
    declared_map_sizes,
    load_catalog,
    parse_string_set,
)

__all__ = [
    "BASENAME_HEAD",
    "BYTES_FIELD_TYPES",
    "DIRS_MAP",
    "FIELD_TYPES",
    "HEADER_FILE",
    "HEADER_SIDECAR",
    "OPTION_TYPES",
    "PRIORITIES",
    "TEMPLATE_FIELD_RE",
    "Catalog",
    "Contract",
    "EnrichSpec",
    "FieldSpec",
    "HookSpec",
    "MapSize",
    "OptionSpec",
    "PolicyField",
    "SetMap",
    "declared_map_sizes",
    "load_catalog",
    "parse_contract",
    "parse_string_set",
]
