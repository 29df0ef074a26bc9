"""Transfer evaluations, one module per protocol (dc-transfer TASK)."""
