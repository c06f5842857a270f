"""Few-shot / zero-shot evaluation, classical baselines, experiments and reports."""
