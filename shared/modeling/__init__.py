"""Model architectures, the registry and the checkpoint format (imports torch: never from web/)."""
