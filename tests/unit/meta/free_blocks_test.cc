// FreeBlocks against a model: two std::sets, the free lists as they were before.
#include "meta/free_blocks.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

namespace vsfs::meta {
namespace {

constexpr uint64_t G = FreeBlocks::kGroupBlocks;

TEST(FreeBlocks, StartsWithTheWholeDataAreaFormattedAndNothingStored) {
  const uint64_t total = 64ull << 20;  // 64 TiB in 1 MiB blocks
  FreeBlocks f(1000, total);
  EXPECT_EQ(f.count(FreeBlocks::kFormatted), total - 1000);
  EXPECT_EQ(f.count(FreeBlocks::kToFormat), 0u);
  EXPECT_EQ(f.first(FreeBlocks::kFormatted), 1000u);
  EXPECT_EQ(f.last(FreeBlocks::kFormatted), total - 1);
  EXPECT_EQ(f.first(FreeBlocks::kToFormat), std::nullopt);
  EXPECT_EQ(f.count_below(FreeBlocks::kFormatted, 1064), 64u);
  EXPECT_EQ(f.count_below(FreeBlocks::kFormatted, 5 * G + 7), 5 * G + 7 - 1000);
  EXPECT_FALSE(f.contains(FreeBlocks::kFormatted, 999));
  EXPECT_TRUE(f.contains(FreeBlocks::kFormatted, 1000));
  EXPECT_EQ(f.explicit_groups(), 0u);
  // A bit and two counts per group and list: under 1 MiB for 64 TiB.
  EXPECT_LT(f.memory_bytes(), 1u << 20);
}

// Random operations as MetaStore makes them, on a few groups (one partial at the end,
// one holding the start of the data area), each checked against the model after every
// step, with every query at random points. Counts each kind of operation and fails if
// one never ran.
TEST(FreeBlocks, MatchesAModelOfTwoOrderedSets) {
  uint64_t grows = 0;
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    const uint64_t first = rng() % (2 * G);
    uint64_t end = first + G + rng() % (6 * G);
    FreeBlocks f(first, end);
    std::set<uint64_t> model[2];
    for (uint64_t b = first; b < end; ++b) model[0].insert(b);
    std::set<uint64_t> explicit_groups;
    auto kind_of = [](int k) { return static_cast<FreeBlocks::Kind>(k); };
    auto rand_block = [&] { return first + rng() % (end - first); };
    std::vector<uint64_t> taken;  // blocks on neither list
    uint64_t done[8] = {};
    for (int step = 0; step < 4000; ++step) {
      const uint64_t block = rand_block();
      const uint64_t g = FreeBlocks::group_of(block);
      switch (rng() % 8) {
        case 0:  // make explicit (the same contents, or empty and refilled)
          if (!f.is_explicit(g)) {
            if (rng() % 2) {
              f.make_explicit(g);
            } else {
              f.make_explicit_empty(g);
              for (uint64_t b = std::max(g * G, first); b < std::min((g + 1) * G, end); ++b) {
                f.insert(FreeBlocks::kFormatted, b);
              }
            }
            explicit_groups.insert(g);
            ++done[0];
          }
          break;
        case 1: case 2: {  // take a block off a list (allocation, formatter)
          if (!f.is_explicit(g)) break;
          const int k = static_cast<int>(rng() % 2);
          if (!model[k].count(block)) break;
          f.erase(kind_of(k), block);
          model[k].erase(block);
          taken.push_back(block);
          ++done[1];
          break;
        }
        case 3: case 4: {  // a taken block comes back (freed, formatted)
          if (taken.empty()) break;
          const size_t i = rng() % taken.size();
          const uint64_t back = taken[i];
          taken[i] = taken.back();
          taken.pop_back();
          if (model[0].count(back) || model[1].count(back)) break;  // refilled (case 6)
          const int k = static_cast<int>(rng() % 2);
          f.insert(kind_of(k), back);
          model[k].insert(back);
          ++done[2];
          break;
        }
        case 5:  // back to implicit when it can be
          if (f.is_explicit(g)) {
            bool full = true;
            for (uint64_t b = std::max(g * G, first); b < std::min((g + 1) * G, end); ++b) {
              full = full && model[0].count(b);
            }
            EXPECT_EQ(f.try_make_implicit(g), full);
            if (full) {
              explicit_groups.erase(g);
              ++done[3];
            } else {
              ++done[4];
            }
          }
          break;
        case 6: {  // a whole group formatted: fill it from both lists
          if (!f.is_explicit(g)) break;
          for (uint64_t b = std::max(g * G, first); b < std::min((g + 1) * G, end); ++b) {
            if (model[1].count(b)) {
              f.erase(FreeBlocks::kToFormat, b);
              model[1].erase(b);
            }
            if (!model[0].count(b)) {
              f.insert(FreeBlocks::kFormatted, b);
              model[0].insert(b);
            }
          }
          ++done[5];
          break;
        }
        case 7: {  // the datastore grows: the group of the old end first explicit
          if (end > first + 12 * G || rng() % 4 != 0) break;
          const uint64_t old_end = end;
          if (old_end % G != 0 && !f.is_explicit(FreeBlocks::group_of(old_end))) {
            f.make_explicit(FreeBlocks::group_of(old_end));
            explicit_groups.insert(FreeBlocks::group_of(old_end));
          }
          end += 1 + rng() % (2 * G);
          f.grow(end);
          // New blocks in an explicit group are on no list until inserted; those of
          // new groups are formatted.
          for (uint64_t b = old_end; b < end; ++b) {
            if (f.is_explicit(FreeBlocks::group_of(b))) f.insert(FreeBlocks::kFormatted, b);
            model[0].insert(b);
          }
          ++done[6];
          break;
        }
        default: break;
      }
      // Queries.
      for (int k = 0; k < 2; ++k) {
        ASSERT_EQ(f.count(kind_of(k)), model[k].size());
        ASSERT_EQ(f.empty(kind_of(k)), model[k].empty());
        const uint64_t from = rng() % (end + 10);
        auto it = model[k].lower_bound(from);
        ASSERT_EQ(f.first(kind_of(k), from),
                  it == model[k].end() ? std::nullopt : std::optional<uint64_t>(*it));
        ASSERT_EQ(f.first(kind_of(k)), model[k].empty() ? std::nullopt
                                                        : std::optional<uint64_t>(*model[k].begin()));
        ASSERT_EQ(f.last(kind_of(k)), model[k].empty() ? std::nullopt
                                                       : std::optional<uint64_t>(*model[k].rbegin()));
        const uint64_t below = rng() % (end + 10);
        ASSERT_EQ(f.count_below(kind_of(k), below),
                  static_cast<uint64_t>(std::distance(model[k].begin(), model[k].lower_bound(below))));
        const uint64_t probe = rng() % (end + 10);
        ASSERT_EQ(f.contains(kind_of(k), probe), model[k].count(probe) == 1);
      }
      ASSERT_EQ(f.explicit_groups(), explicit_groups.size());
    }
    for (int i = 0; i < 6; ++i) EXPECT_GT(done[i], 0u) << "operation kind " << i << " never ran";
    grows += done[6];
  }
  EXPECT_GT(grows, 0u);
}

}  // namespace
}  // namespace vsfs::meta
