"""FILS training objectives: ActCLIP, feature prediction in language space, optional VideoMAE pixel loss."""
