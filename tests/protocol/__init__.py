"""Tests of the pure protocol package: tokens, COSE, strict CBOR, keys, key sets, topics."""
