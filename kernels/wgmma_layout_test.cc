// The sm_90 group-attention kernels' shared-memory tiles against what their
// wgmma descriptors make the tensor cores read, per the PTX ISA's canonical
// layouts ("Shared Memory Matrix Layout", 128B swizzling):
//   K-major:  Swizzle<3,4,3> o ((8,m),(T,2k)) : ((8T,SBO),(1,T))
//   MN-major: Swizzle<3,4,3> o ((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO))
// (T = 8 bf16 per 16 bytes; offsets in elements from the descriptor's start
// address; the swizzle acts on the final byte address, whose atoms are
// 1024-byte aligned). Every element an operand of one k-step covers must be
// read from the address the kernel's cp.async put it at.
#include "kernels/wgmma_layout.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace arbor::kernels::wgmma {
namespace {

struct Desc {
  uint32_t start, lbo, sbo, swizzle;
};
Desc Decode(uint64_t d) {
  return Desc{static_cast<uint32_t>(d & 0x3FFF) << 4,
              static_cast<uint32_t>((d >> 16) & 0x3FFF) << 4,
              static_cast<uint32_t>((d >> 32) & 0x3FFF) << 4, static_cast<uint32_t>(d >> 62)};
}

uint32_t Swizzle343(uint32_t byte_addr) { return byte_addr ^ (((byte_addr >> 7) & 7u) << 4); }

// Where the tensor cores read element (mn, k) of a K-major operand (k < 16).
uint32_t KMajorAddress(const Desc& d, uint32_t mn, uint32_t k) {
  const uint32_t elems = (mn % 8) * 64 + (k % 8) + (k / 8) * 8;
  return Swizzle343(d.start + 2 * elems + (mn / 8) * d.sbo);
}

// Where the tensor cores read element (k, n) of an MN-major operand (k < 16).
uint32_t MnMajorAddress(const Desc& d, uint32_t k, uint32_t n) {
  const uint32_t elems = (n % 8) + ((n / 8) % 8) * 8 + (k % 8) * 64;
  return Swizzle343(d.start + 2 * elems + (n / 64) * d.lbo + (k / 8) * d.sbo);
}

// Where the kernel's cp.async put element `col` of tile row `row`.
uint32_t WrittenAddress(uint32_t tile, uint32_t row, uint32_t col) {
  return tile + Swizzled128(row, col / 8) + (col % 8) * 2;
}

constexpr uint32_t kTile = 5 * kAtomBytes;  // some atom-aligned tile in shared memory

TEST(WgmmaLayoutTest, DescriptorFields) {
  const Desc d = Decode(Swizzled128Desc(kTile + 96, 1024));
  EXPECT_EQ(d.start, kTile + 96);
  EXPECT_EQ(d.lbo, 1024u);
  EXPECT_EQ(d.sbo, kAtomBytes);
  EXPECT_EQ(d.swizzle, 1u);  // 128-byte swizzle
}

TEST(WgmmaLayoutTest, SwizzleIsAPermutationOfEachAtom) {
  for (uint32_t atom = 0; atom < 4; ++atom) {
    bool seen[64] = {};
    for (uint32_t r = 0; r < 8; ++r) {
      for (uint32_t c = 0; c < 8; ++c) {
        const uint32_t off = Swizzled128(8 * atom + r, c);
        ASSERT_EQ(off / kAtomBytes, atom);
        ASSERT_EQ(off % 16, 0u);
        ASSERT_EQ(off / kRowBytes, 8 * atom + r) << "a chunk stays in its row";
        seen[(off % kAtomBytes) / 16] = true;
      }
    }
    for (bool s : seen) EXPECT_TRUE(s);
  }
}

// S = Q K^T: Q (64 rows) and K (128 keys) are K-major; k-step kk covers
// head dims 16 kk .. 16 kk + 15.
TEST(WgmmaLayoutTest, QueryAndKeyTilesAreTheKMajorOperands) {
  for (uint32_t rows : {64u, 128u}) {
    for (uint32_t kk = 0; kk < 4; ++kk) {
      const Desc d = Decode(KMajorStepDesc(kTile, kk));
      for (uint32_t mn = 0; mn < rows; ++mn) {
        for (uint32_t k = 0; k < 16; ++k) {
          ASSERT_EQ(KMajorAddress(d, mn, k), WrittenAddress(kTile, mn, 16 * kk + k))
              << "rows " << rows << " k-step " << kk << " row " << mn << " k " << k;
        }
      }
    }
  }
}

// O += P V: V (128 keys x 64 dims, stored as key rows) is the N-major B
// operand; k-step ks covers keys 16 ks .. 16 ks + 15, N the 64 dims.
TEST(WgmmaLayoutTest, ValueTileIsTheNMajorOperand) {
  for (uint32_t ks = 0; ks < 8; ++ks) {
    const Desc d = Decode(NMajorStepDesc(kTile, ks));
    for (uint32_t k = 0; k < 16; ++k) {
      for (uint32_t n = 0; n < 64; ++n) {
        ASSERT_EQ(MnMajorAddress(d, k, n), WrittenAddress(kTile, 16 * ks + k, n))
            << "k-step " << ks << " key " << k << " dim " << n;
      }
    }
  }
}

}  // namespace
}  // namespace arbor::kernels::wgmma
