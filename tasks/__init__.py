"""The stages of the conversion, one module each, with the logic in plain typed functions.

Stages: `checks` (pre-flight), `listing`, `samples`, `planning`, `specs`, `build`, `index`,
`verify`. Their machinery: `claims` (one builder per shard across runs), `policy` (retries).
Packages: `storage` (the storage seam: GCS and local folders), `objectron` (Objectron's file
formats, decoding and sample data). `fake_gcs` starts a local GCS emulator.
"""
