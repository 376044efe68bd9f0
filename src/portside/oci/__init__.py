"""Pure OCI/Docker format logic: digests, names, media types, manifests. No I/O."""
