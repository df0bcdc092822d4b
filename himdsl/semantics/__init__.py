"""Semantic analysis: names, scopes, roles, types and shapes (`checker`)."""
