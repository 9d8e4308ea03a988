/*
 * load_hist: a log-linear latency histogram in the manner of HdrHistogram, for wsgate-load.
 *
 * Values (nanoseconds) below 256 are counted exactly; above, every power of two is split into 128
 * equal sub-buckets, so a reported value is at most 1/128 (0.8 %) above the true one. Recording
 * is an index computation and an increment (no allocation, no floating point), cheap enough for
 * every message of a 200k msgs/s run. Values beyond LOAD_HIST_MAX (about 73 minutes) land in the
 * last bucket; the exact maximum is kept beside the buckets. Histograms of several load processes
 * merge by adding counts, so percentiles over all of them stay exact to the bucket.
 *
 * Threads: a histogram belongs to one thread (each load process has its own).
 */
#ifndef LOAD_HIST_H
#define LOAD_HIST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define LOAD_HIST_SUB_BITS 7 /* 128 sub-buckets per power of two */
#define LOAD_HIST_MAX_BITS 42
#define LOAD_HIST_MAX      ((UINT64_C(1) << LOAD_HIST_MAX_BITS) - 1)
/* Exact part [0, 256) (two blocks of 128) plus 128 buckets for each power of two from 2^8 to 2^41.
 */
#define LOAD_HIST_BUCKETS ((LOAD_HIST_MAX_BITS - LOAD_HIST_SUB_BITS + 1) << LOAD_HIST_SUB_BITS)

typedef struct {
  uint64_t count;
  uint64_t min, max; /* exact; min is UINT64_MAX while empty */
  uint64_t sum;      /* for the mean; saturates instead of wrapping */
  uint64_t buckets[LOAD_HIST_BUCKETS];
} load_hist;

void load_hist_init(load_hist *h);
void load_hist_record(load_hist *h, uint64_t value);
/* Adds the counts of src to dst. Both borrowed. */
void load_hist_merge(load_hist *dst, const load_hist *src);
/* {"n", "min", "max", "sum", "b": [[index, count]...]}: how a worker reports a histogram to the
 * parent (non-empty buckets only). NULL when out of memory. */
json_t *load_hist_json(const load_hist *h);

/* Bucket index of a value, and the lowest / highest value that falls in a bucket. */
size_t load_hist_index(uint64_t value);
uint64_t load_hist_lowest(size_t index);
uint64_t load_hist_highest(size_t index);

/*
 * The value at percentile q (0 < q <= 100): the highest value of the bucket holding the
 * ceil(q% * count)-th smallest recorded value, never above the exact maximum. 0 when empty.
 */
uint64_t load_hist_percentile(const load_hist *h, double q);
double load_hist_mean(const load_hist *h);

#endif
