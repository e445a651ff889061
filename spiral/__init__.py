"""spiral: the learning system that trains painting agents on the ``envs`` environments."""
