"""Offline evaluation harness: datasets, metrics, runner, comparison, reports. Imports copilot, never api."""
