"""Shared training and evaluation code, imported by the experiment scripts."""
