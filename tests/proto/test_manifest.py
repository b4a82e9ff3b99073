"""Chunk manifests and file CIDs (fastp2p.proto.manifest), with vectors from the CID spec."""

from __future__ import annotations

import hashlib
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from fastp2p.multibase import cid_v1_encode, multibase_decode, multihash_encode
from fastp2p.proto.manifest import (
    MAGIC,
    RAW,
    Manifest,
    ManifestError,
    cid_digest,
    cid_from_bytes,
    cid_to_bytes,
)
from fastp2p.proto.varint import uvarint_encode

# multiformats-cid.md: "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA" is
# base58btc - cidv1 - raw - sha2-256-256-6e6ff795...
SPEC_CID = "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA"
SPEC_DIGEST = "6e6ff7950a36187a801613426e858dce686cd7d7e3c0fc42ee0330072d245c95"
# The raw-leaf CIDv1 of b"hello world" as IPFS prints it (ipfs add --raw-leaves --cid-version 1).
HELLO_CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def test_spec_vector_decodes_to_its_human_readable_form() -> None:
    raw = multibase_decode(SPEC_CID)
    assert raw[:2] == bytes([0x01, RAW])  # cidv1, raw
    assert raw[2:4] == bytes([0x12, 0x20])  # sha2-256, 32 bytes
    assert cid_digest(SPEC_CID).hex() == SPEC_DIGEST
    assert cid_to_bytes(SPEC_CID) == raw


def test_spec_vector_round_trips_between_bases() -> None:
    b32 = cid_from_bytes(cid_to_bytes(SPEC_CID))
    assert b32.startswith("b") and b32 == b32.lower()
    assert cid_digest(b32) == cid_digest(SPEC_CID)
    mh = multihash_encode(0x12, bytes.fromhex(SPEC_DIGEST))
    assert cid_v1_encode(RAW, mh, "base58btc") == SPEC_CID


def test_chunk_cid_matches_ipfs_raw_leaf() -> None:
    m = Manifest.from_bytes(b"hello world", 4096)
    assert m.chunks == 1
    assert m.chunk_cid(0) == HELLO_CID
    assert m.digest(0) == hashlib.sha256(b"hello world").digest()


def test_manifest_encoding_is_documented_layout() -> None:
    data = os.urandom(10_000)
    m = Manifest.from_bytes(data, 4096)
    enc = m.encode()
    digests = b"".join(hashlib.sha256(data[o : o + 4096]).digest() for o in (0, 4096, 8192))
    expect = (
        MAGIC
        + uvarint_encode(1)
        + uvarint_encode(4096)
        + uvarint_encode(10_000)
        + uvarint_encode(0x12)
        + uvarint_encode(32)
        + digests
    )
    assert enc == expect
    assert Manifest.decode(enc) == m
    assert m.cid == cid_v1_encode(RAW, multihash_encode(0x12, hashlib.sha256(enc).digest()))
    assert Manifest.from_cid_and_bytes(m.cid, enc) == m
    assert [m.chunk_range(i) for i in range(3)] == [(0, 4096), (4096, 8192), (8192, 10_000)]


def test_same_content_same_cid_different_chunk_size_different_cid() -> None:
    data = os.urandom(70_000)
    assert Manifest.from_bytes(data, 8192).cid == Manifest.from_bytes(bytes(data), 8192).cid
    assert Manifest.from_bytes(data, 8192).cid != Manifest.from_bytes(data, 16384).cid


def test_empty_and_exact_multiple() -> None:
    e = Manifest.from_bytes(b"", 4096)
    assert e.chunks == 0 and Manifest.decode(e.encode()) == e
    m = Manifest.from_bytes(b"x" * 8192, 4096)
    assert m.chunks == 2 and m.chunk_len(1) == 4096


def test_from_file_parallel_matches_in_memory(tmp_path: pathlib.Path) -> None:
    data = os.urandom(3 * 65536 + 17)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    with ThreadPoolExecutor(2) as pool:
        assert Manifest.from_file(p, 65536, map_fn=pool.map) == Manifest.from_bytes(data, 65536)
    (tmp_path / "e").write_bytes(b"")
    assert Manifest.from_file(tmp_path / "e").size == 0


def test_verify_chunk() -> None:
    data = os.urandom(9000)
    m = Manifest.from_bytes(data, 4096)
    assert m.verify_chunk(2, data[8192:])
    assert not m.verify_chunk(2, data[8192:-1])
    assert not m.verify_chunk(0, bytes(4096))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b"XPMF" + b[4:],  # magic
        lambda b: b[:4] + b"\x02" + b[5:],  # version
        lambda b: b[:-1],  # truncated digests
        lambda b: b + b"\x00",  # trailing byte
        lambda b: b[:4],  # no header
        lambda b: b[:4] + b"\x01\x80\x00" + b[7:],  # non-minimal varint
    ],
)
def test_malformed_manifests_rejected(mutate) -> None:  # type: ignore[no-untyped-def]
    enc = Manifest.from_bytes(os.urandom(5000), 4096).encode()
    with pytest.raises(ManifestError):
        Manifest.decode(mutate(enc))


def test_bad_chunk_sizes_rejected() -> None:
    for cs in (0, 1000, 4097, 128 << 20):
        with pytest.raises(ManifestError):
            Manifest(0, cs, b"")
    with pytest.raises(ManifestError):
        Manifest(5000, 4096, b"\x00" * 32)  # 2 chunks need 64 digest bytes


def test_manifest_must_match_cid() -> None:
    a = Manifest.from_bytes(b"a" * 5000, 4096)
    b = Manifest.from_bytes(b"b" * 5000, 4096)
    with pytest.raises(ManifestError, match="do not hash"):
        Manifest.from_cid_and_bytes(a.cid, b.encode())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not-a-cid",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",  # CIDv0 (dag-pb)
        cid_v1_encode(0x70, multihash_encode(0x12, bytes(32))),  # dag-pb codec
        cid_v1_encode(RAW, multihash_encode(0x00, b"abc")),  # identity hash
        "b" + "a" * 10,
    ],
)
def test_cid_digest_rejects_non_file_cids(text: str) -> None:
    with pytest.raises(ManifestError):
        cid_digest(text)
