"""Benchmarks behind ``seqrl bench``; each writes a JSON result and a Markdown table."""
