"""The end-to-end path: unfreeze the top stages of a backbone and train them with a linear head.

``config.py`` holds the options and how the ones not given resolve (``--init-head``, the
newest cache, defaults); ``model.py`` the network, the freezing rules and the LP-FT head
initialisation; ``data.py`` the images, the split and the augmentation; ``optim.py`` the
optimizer and schedule; ``epoch.py`` the plain ``train_one_epoch`` and ``evaluate``;
``checkpoint.py`` the crash-safe checkpoints and the loop's state; ``distributed.py`` torchrun
detection and the collectives; ``train.py`` ``finetune()``, which joins them; ``report.py`` the
run folder's files.
"""
