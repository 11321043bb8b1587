"""Helpers that tests, benchmarks and scripts share: a loopback Databricks warehouse, tiny models, the browser
harness, AppTest starters and the page-data snapshot. Nothing here is imported by the app."""
