// The shared-memory tile layout of the sm_90 group-attention kernels
// (attention_sm90.cu) and the wgmma descriptors that read it, as plain
// functions so that a CPU test (kernels/wgmma_layout_test.cc) can check
// one against the other through the PTX ISA's canonical layouts. No CUDA types.
#ifndef ARBOR_KERNELS_WGMMA_LAYOUT_H_
#define ARBOR_KERNELS_WGMMA_LAYOUT_H_

#include <cstdint>

#if defined(__CUDACC__)
#define ARBOR_HOST_DEVICE __host__ __device__
#else
#define ARBOR_HOST_DEVICE
#endif

namespace arbor::kernels::wgmma {

// A tile row: 64 bf16 (one key's or one query row's head_dim of 64).
inline constexpr uint32_t kRowBytes = 128;
// An 8-row swizzle atom; tiles start on its boundary.
inline constexpr uint32_t kAtomBytes = 8 * kRowBytes;

// Byte offset of 16-byte chunk `chunk` (0-7) of row `row` in a tile of
// 128-byte rows under the 128-byte swizzle (Swizzle<3,4,3>): the chunk index
// XOR the row's index within its atom.
ARBOR_HOST_DEVICE constexpr uint32_t Swizzled128(uint32_t row, uint32_t chunk) {
  return row * kRowBytes + ((chunk ^ (row & 7u)) << 4);
}

// wgmma shared-memory matrix descriptor of a 128B-swizzled operand starting
// at `smem_addr` (shared-state-space byte address): start address, leading
// byte offset `lbo`, stride byte offset of one atom (8 rows), swizzle mode 1
// (128 bytes). K-major operands ignore `lbo`; an N-major operand uses it only
// when wider than 64 elements.
ARBOR_HOST_DEVICE constexpr uint64_t Swizzled128Desc(uint32_t smem_addr, uint32_t lbo) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFFu) >> 4) |
         (static_cast<uint64_t>((lbo & 0x3FFFFu) >> 4) << 16) |
         (static_cast<uint64_t>(kAtomBytes >> 4) << 32) | (uint64_t{1} << 62);
}

// Operand of k-step `kk` (elements 16 kk .. 16 kk + 15 of each row) of a
// K-major tile (Q or K: rows are M or N, a row's 64 elements are K): the
// start address moves 32 bytes inside the atom; the hardware swizzles the
// final address.
ARBOR_HOST_DEVICE constexpr uint64_t KMajorStepDesc(uint32_t tile_addr, uint32_t kk) {
  return Swizzled128Desc(tile_addr + kk * 32, 16);
}

// Operand of k-step `ks` (rows 16 ks .. 16 ks + 15, i.e. keys) of an N-major
// tile (V as the B operand of P V: a row's 64 elements are N): two atoms per
// k-step.
ARBOR_HOST_DEVICE constexpr uint64_t NMajorStepDesc(uint32_t tile_addr, uint32_t ks) {
  return Swizzled128Desc(tile_addr + ks * 2 * kAtomBytes, kAtomBytes);
}

}  // namespace arbor::kernels::wgmma

#undef ARBOR_HOST_DEVICE

#endif  // ARBOR_KERNELS_WGMMA_LAYOUT_H_
