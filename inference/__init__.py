"""Using a finished run of any kind (a fitted head or a fine-tuned network): ``predict`` new
images and ``export`` the whole model. This package sits above both stages and fine-tuning.

``predict.py`` holds ``predict_paths``/``predict_chunks``, which join the rest: ``images.py``
expands folders and hashes each file; ``cached.py`` finds vectors the run's cache already
holds; ``backbone.py`` rebuilds the run's frozen backbone; ``features.py`` computes and fuses
the feature blocks (the mirror view of ``--tta`` too); ``head.py`` applies the head;
``finetuned.py`` runs a fine-tuned network; ``rows.py`` is the ``Predictions`` record and its
CSV rows, ``csvfile.py`` the CSV writers and the ``--out`` check; ``export.py`` the export.
"""
