"""Codecs: checksums (CRC64NVME, CRC32C, CRC32, MD5 and S3's derived forms), BGZF blocks and
gzip/BGZF/plain streams, over the compiled kernels ``_checksum`` and ``_bgzf``."""
