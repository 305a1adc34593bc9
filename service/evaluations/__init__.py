"""Evaluations: score models' answers against a dataset's reference answers (DESIGN 14)."""
