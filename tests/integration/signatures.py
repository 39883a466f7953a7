#!/usr/bin/env python3
"""signatures.py KIND FILE: writes the on-disk signature of a volume manager member into
FILE (a device or image, left otherwise as it is), as the tool that makes one would:
  lvm2-pv   an LVM2 physical volume label (sector 1, with its CRC)
  md-1.2    an mdraid 1.2 member superblock (4 KiB from the start, with its checksum)
  md-1.0    an mdraid 1.0 member superblock (near the end of the device)
The tools (pvcreate, mdadm --create) need the device mapper or the md driver, which a
test machine may not have; libblkid only reads these bytes. The tests check with
blkid -p that libblkid recognises what was written."""
import os
import struct
import sys
import zlib


def lvm2_crc(data):
    # LVM's CRC: the reflected CRC-32 polynomial, initial value 0xf597a6cf, no final xor.
    return (~zlib.crc32(data, ~0xF597A6CF & 0xFFFFFFFF)) & 0xFFFFFFFF


def lvm2_pv(size):
    sector = bytearray(512)
    pv_header = struct.pack("<32sQ", b"0123456789abcdefghijklmnopqrstuv", size)
    sector[32:32 + len(pv_header)] = pv_header
    struct.pack_into("<8sQ", sector, 0, b"LABELONE", 1)  # id, sector of the label
    struct.pack_into("<I8s", sector, 20, 32, b"LVM2 001")  # offset of contents, type
    struct.pack_into("<I", sector, 16, lvm2_crc(bytes(sector[20:])))
    return [(512, bytes(sector))]


def md1(size, version):
    sectors = size // 512
    if version == "1.2":
        super_offset = 8
    else:  # 1.0: 8 KiB from the end, 4 KiB aligned
        super_offset = (sectors - 8 * 2) & ~(4 * 2 - 1)
    sb = bytearray(256)
    struct.pack_into("<IIII", sb, 0, 0xA92B4EFC, 1, 0, 0)  # magic, major, features, pad
    sb[16:32] = bytes(range(16))  # set_uuid
    sb[32:64] = b"vsfs-test:0".ljust(32, b"\0")  # set_name
    struct.pack_into("<QIIQIII", sb, 64, 0, 1, 0, (sectors - 2048) & ~7, 0, 2, 0)
    struct.pack_into("<QQQQ", sb, 128, 2048 if version == "1.2" else 0,
                     (sectors - 2048) & ~7, super_offset, 0)
    struct.pack_into("<I", sb, 160, 0)  # dev_number
    sb[168:184] = bytes(range(16, 32))  # device_uuid
    struct.pack_into("<QQ", sb, 192, 0, 1)  # utime, events
    struct.pack_into("<I", sb, 220, 0)  # max_dev: no role table
    words = struct.unpack("<64I", bytes(sb))
    total = sum(words)
    csum = ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF
    struct.pack_into("<I", sb, 216, csum)
    return [(super_offset * 512, bytes(sb))]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    kind, path = sys.argv[1], sys.argv[2]
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if kind == "lvm2-pv":
            writes = lvm2_pv(size)
        elif kind in ("md-1.2", "md-1.0"):
            writes = md1(size, kind[3:])
        else:
            sys.exit("unknown kind: " + kind)
        for offset, data in writes:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
