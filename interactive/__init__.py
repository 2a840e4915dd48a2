"""The interactive app (app.py): config.py (`AppConfig`, and which model a bare `python app.py`
shows), class_names.py (what the class picker lists), session.py (one model, one Sampler, and
each draw with its trace: the images, the checkerboard filling in step by step, the entropy of
every cell, the time taken). app.py parses its arguments and builds the web page on these."""
