"""airlock's node installer: `airlock-node init/join/upgrade` and the node's registry, shipped as one pyz.

Rooms: `phases/` (one module per phase; no phase imports another) ordered by `workflow`, run by `runner`;
`staging` (the staged bundle the phases read, re-hashed); `render/` (every node file through a serializer);
`registry/` (the node's OCI registry: API decisions, HTTP connections, the serving process); `remote` (`--from`);
`cli` and `zipapp_main` (the pyz's entry point). The bundle format, trust and verification are `bundle`.
"""

__version__ = "0.1.0"
