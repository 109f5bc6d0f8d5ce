"""Accuracy measurement on standard face benchmarks."""
