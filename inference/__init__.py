"""Using a finished run of any kind (a fitted head or a fine-tuned network): ``predict`` new
images and ``export`` the whole model. This package sits above both stages and fine-tuning."""
