"""The first-run demo (demo.py): the whole pipeline on scikit-learn's bundled digits, on a CPU.

config.py (DemoConfig), stages.py (the stage record: reuse, and clearing only what the demo wrote),
pipeline.py (the stages and `run_demo`), report.py (held-out NLL, recognition, figures, summary),
readme.py (the README's numbers from the report)."""
