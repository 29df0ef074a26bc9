"""DeepCluster trainer (dc-train)."""
