"""Strict test doubles for Kubernetes programs that cannot be had on the test machines."""
