"""A/B updates of the image: the boot entries RAUC switches between and the health gate."""
