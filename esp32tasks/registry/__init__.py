"""The OCI registry: client and HTTP policy (oras-py), credentials, push and verify."""
