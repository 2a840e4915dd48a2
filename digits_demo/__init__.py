"""The first-run demo (demo.py): the whole pipeline on scikit-learn's bundled digits, on a CPU.

config.py (DemoConfig), stages.py (the stage record: reuse, and clearing only what the demo wrote),
pipeline.py (the stages and `run_demo`), report.py (held-out NLL, recognition, figures, summary),
study.py (`demo.py --study`: the generator at other scale ratios and a single scale, swept over
guidance x steps per scale: the paper's Fig. 4a/5 on the digits), readme.py (the README's numbers
from the reports)."""
