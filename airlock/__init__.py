"""The `airlock` program: build-side and node-side commands in one command line."""
