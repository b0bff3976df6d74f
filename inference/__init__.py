"""Using a finished run (a fitted head or a fine-tuned network): ``predict`` new images, ``export`` the model."""
