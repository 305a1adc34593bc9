"""Datasets: uploads converted, validated, counted and priced (`creation`), large ones
validated by the worker (`validation`), deletion and the file sweep (`removal`).

The per-example rules are pure and live in `service.domain.datasets`; `ingest`
runs them over a file, and `spreadsheet` reads XLSX safely.
"""
