"""Fine-tuning: unfreeze the top stages of a backbone and train them with a linear head (LP-FT)."""
