"""Leaderboard generation from result files (dc-leaderboard)."""
