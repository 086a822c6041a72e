"""Objectron's own formats, apart from the pipeline that moves them.

| module | what it holds |
|---|---|
| `proto.py` | protobuf messages of annotation and AR-metadata files (`schema.binpb`), framing |
| `decode.py` | geometry and annotation files decoded to the JSON twins |
| `decode_pool.py`, `decode_worker.py` | decoding in worker processes, overlapped with a build |
| `box.py` | the 3D box: its 9 keypoints (`UNIT_BOX`) and 12 edges (`EDGES`) |
| `sample_data.py` | an Objectron-shaped sample dataset (the embedded default and the tests' data) |
| `index/` | the real split index files (`v1/index/` of gs://objectron) |
"""
