#include "common/engine/page_pools.h"

#include <gtest/gtest.h>

namespace gka::engine {
namespace {

TEST(IdPoolTest, AllOrNothingAndReuse) {
  KvPagePool pool(4);
  auto a = pool.Allocate(3);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(pool.num_free(), 1);
  auto b = pool.Allocate(2);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.num_free(), 1);  // nothing taken by the failed call
  pool.Free(*a);
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_FALSE(pool.InUse((*a)[0]));
  EXPECT_EQ(PagesFor(0, 16), 0);
  EXPECT_EQ(PagesFor(16, 16), 1);
  EXPECT_EQ(PagesFor(17, 16), 2);
}

TEST(IdPoolDeathTest, DoubleFreeIsABug) {
  StateSlotPool pool(2);
  auto a = pool.Allocate(1);
  ASSERT_TRUE(a.ok());
  pool.Free(*a);
  EXPECT_DEATH(pool.Free(*a), "not in use");
}

}  // namespace
}  // namespace gka::engine
