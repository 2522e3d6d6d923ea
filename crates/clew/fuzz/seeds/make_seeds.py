#!/usr/bin/env python3
"""Writes the binary seeds of crates/clew/fuzz (run from anywhere; needs `cryptography`).

WAL and sending-queue record bodies in every version (plain, sealed with the fuzz target's fixed
key [7]*32, key declaration), a framed WAL record, and bloom.bin files. The OTLP payload is
clew-model's protobuf seed. The text seeds (YAML, JSON, query strings) are committed as written.
"""
import base64, json, os, struct, zlib
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

here = os.path.dirname(os.path.abspath(__file__))
proto = open(os.path.join(here, "../../../clew-model/fuzz/seeds/otlp_proto/request.bin"), "rb").read()
KEY = bytes([7] * 32)
KEY_ID = bytes(range(1, 17))
TENANT = b"acme"
ENVELOPE = {"format": 1, "provider": "local", "tenant": "acme", "kek_id": "ring-1",
            "kek_version": 2, "wrapped": base64.b64encode(bytes(60)).decode(), "created_unix": 1700000000}

def head(version):
    return bytes([version]) + struct.pack("<H", len(TENANT)) + TENANT

def seal(aad, plain):
    nonce = bytes(range(12))
    return b"\x01" + nonce + AESGCM(KEY).encrypt(nonce, plain, b"clew record v1" + aad)

def frame(body):
    return struct.pack("<II", len(body), zlib.crc32(body)) + body

def write(target, name, data):
    os.makedirs(os.path.join(here, target), exist_ok=True)
    with open(os.path.join(here, target, name), "wb") as f:
        f.write(data)

# WAL (no clear field, compact envelope JSON).
write("wal_record", "wal_plain.bin", head(1) + proto)
aad = head(2) + KEY_ID
write("wal_record", "wal_sealed.bin", aad + seal(aad, proto))
write("wal_record", "wal_key.bin", head(3) + KEY_ID + json.dumps(ENVELOPE, separators=(",", ":")).encode())
write("wal_record", "wal_plain_framed.bin", frame(head(1) + proto))
# Sending queue (span count u32 LE in clear, pretty envelope JSON).
count = struct.pack("<I", 3)
write("wal_record", "queue_plain.bin", head(1) + count + proto)
aad = head(2) + count + KEY_ID
write("wal_record", "queue_sealed.bin", aad + seal(aad, proto))
write("wal_record", "queue_key.bin", head(3) + KEY_ID + json.dumps(ENVELOPE, indent=2).encode())

# bloom.bin: "CLBF", version 1, 7 probes, bit count u64 LE, the words.
def bloom(bits, fill):
    return b"CLBF" + bytes([1, 7]) + struct.pack("<Q", bits) + bytes([fill]) * (bits // 8)
write("bloom", "empty_640.bin", bloom(640, 0))
write("bloom", "mixed_1024.bin", bloom(1024, 0x5a))
write("bloom", "full_64.bin", bloom(64, 0xff))
