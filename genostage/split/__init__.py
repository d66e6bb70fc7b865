"""Splitting BAM and FASTQ into chunks, and chunk plans made with ranged reads."""
