"""Box side of sync with the org server: identity, signing, outbox, pull/push worker."""
