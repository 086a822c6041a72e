"""The extensions of a convert sample's members (`KEY.video.mov`, ...): plain names that both
the planning (tasks/samples.py) and the frame workers use, here so that importing them imports
nothing else (no Prefect in a frame worker)."""

VIDEO, GEOMETRY, ANNOTATION, METADATA = "video.mov", "geometry.pbdata", "anno.pbdata", "json"
