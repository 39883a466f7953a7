// CRC-32C (Castagnoli), the checksum of every vsfs metadata block and journal record.
// Uses the SSE4.2 instruction when the CPU has it, a table otherwise.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vsfs {

// Continues a running crc: crc32c(crc32c(0, a), b) == crc32c(0, a+b).
uint32_t crc32c(uint32_t crc, const void* data, size_t length_bytes);

}  // namespace vsfs
