"""The airlock bundle format: what the builder writes and the installer reads.

Manifest model, tar stream, content store, trust decisions (admission.py), the network
policy and the retry/resume routine both transports share (netpolicy.py, resume.py), OCI media types and
image references. Imports neither `builder` nor `installer`.
"""
