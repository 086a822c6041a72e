"""Frames (`objectron-wds frames`): one JPEG and its labels per annotated frame of a video.

The modules, in the order a frame shard is built: `video` decodes a fetched video (upright,
resized, JPEG-encoded), `labels` makes each frame's JSON, `shard` writes a shard's samples in
their seeded order.
"""
