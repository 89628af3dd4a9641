"""The `evaluate` stage: multi-view prediction with the fine-tuned classifier, benchmark metrics, report and nightly sweep."""
