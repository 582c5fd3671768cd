"""The synchronisation protocol: contributions, the offset fence, snapshots,
checkpoints, the model feed."""
