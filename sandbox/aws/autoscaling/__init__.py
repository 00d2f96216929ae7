"""Auto Scaling: server groups that run the baked image on sandbox machines."""
