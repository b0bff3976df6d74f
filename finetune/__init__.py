"""The end-to-end path: unfreeze the top stages of a backbone and train them with a linear head.

``model.py`` holds the network, the freezing rules and the LP-FT head initialisation;
``data.py`` the images, the split and the augmentation; ``checkpoint.py`` the crash-safe
checkpoints; ``distributed.py`` torchrun detection and sharded evaluation; ``train.py`` the
plain ``train_one_epoch`` / ``evaluate`` functions and ``finetune()`` that joins them;
``report.py`` the run folder's files.
"""
