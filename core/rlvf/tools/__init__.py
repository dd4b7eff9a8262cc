"""Helpers around training: plots, tables, plugin scaffold, vLLM install."""
