"""The stages of the conversion, one module each, with the logic in plain typed functions.

Support modules: `storage` (the storage seam), `fake_gcs` (a local GCS emulator).
"""
