"""Behaviour policies that ship with seqrl and generate its datasets."""
