"""Evaluation of fine-tuned classifiers: metrics, multi-view prediction, results table, report, plots, sweep."""
