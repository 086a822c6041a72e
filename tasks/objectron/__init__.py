"""Objectron's own formats, apart from the pipeline that moves them.

| module | what it holds |
|---|---|
| `proto.py` | protobuf messages of annotation and AR-metadata files (`schema.binpb`), framing |
| `decode.py` | geometry and annotation files decoded to the JSON twins |
| `decode_pool.py`, `decode_worker.py` | decoding in worker processes, overlapped with a build |
| `sample_data.py` | an Objectron-shaped sample dataset (the embedded default and the tests' data) |
| `index/` | the real split index files (`v1/index/` of gs://objectron) |
"""
