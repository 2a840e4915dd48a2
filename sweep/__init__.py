"""The paper's guidance sweep as library code (main_sweep.py parses and calls it).

    config.py   SweepConfig: the grid (models, guidance weights, steps per scale, counts) and the settings
    grid.py     guidance ranges and steps-per-scale settings from their text
    points.py   the models (read without their weights) and each point's columns and folder
    folder.py   the sweep's folder: its record, one sweep per folder, a grid that may grow
    results.py  the rows: results files, best guidance per setting, the 2% rule
    report.py   the best-guidance table and the plots, from the rows
    run.py      run_sweep: sample, evaluate, one row per point, the tables and plots after each
"""
