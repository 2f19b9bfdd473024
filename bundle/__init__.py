"""The airlock bundle format: what the builder writes and the installer reads.

Manifest model, tar stream, content store, trust decisions, OCI media types and
image references. Imports neither `builder` nor `installer`.
"""
