/*
 * load_hist: log-linear latency histogram (see load_hist.h).
 *
 * Threads: whichever thread owns the histogram.
 */
#include "load_hist.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

#define SUB     ((size_t)1 << LOAD_HIST_SUB_BITS) /* 128 */
#define EXACT   (2 * SUB)                         /* values below this are their own bucket */
#define LAST_IX (LOAD_HIST_BUCKETS - 1)

void load_hist_init(load_hist *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

/*
 * For v >= 256 with its highest bit at position msb (>= 8), shift = msb - 7 keeps the top 8 bits:
 * top = v >> shift is in [128, 256), and index = shift * 128 + top. shift 1 gives [256, 384),
 * shift 2 gives [384, 512), ...: contiguous with the exact range [0, 256).
 */
size_t load_hist_index(uint64_t value) {
  if (value < EXACT)
    return (size_t)value;
  if (value > LOAD_HIST_MAX)
    return LAST_IX;
  unsigned msb = 63u - (unsigned)__builtin_clzll(value);
  unsigned shift = msb - LOAD_HIST_SUB_BITS;
  return ((size_t)shift << LOAD_HIST_SUB_BITS) + (size_t)(value >> shift);
}

uint64_t load_hist_lowest(size_t index) {
  if (index < EXACT)
    return index;
  size_t shift = (index >> LOAD_HIST_SUB_BITS) - 1;
  uint64_t top = (index & (SUB - 1)) + SUB;
  return top << shift;
}

uint64_t load_hist_highest(size_t index) {
  if (index < EXACT)
    return index;
  size_t shift = (index >> LOAD_HIST_SUB_BITS) - 1;
  uint64_t top = (index & (SUB - 1)) + SUB;
  return ((top + 1) << shift) - 1;
}

void load_hist_record(load_hist *h, uint64_t value) {
  h->buckets[load_hist_index(value)]++;
  h->count++;
  if (value < h->min)
    h->min = value;
  if (value > h->max)
    h->max = value;
  h->sum = h->sum + value < h->sum ? UINT64_MAX : h->sum + value;
}

void load_hist_merge(load_hist *dst, const load_hist *src) {
  if (src->count == 0)
    return;
  for (size_t i = 0; i < LOAD_HIST_BUCKETS; i++)
    dst->buckets[i] += src->buckets[i];
  dst->count += src->count;
  if (src->min < dst->min)
    dst->min = src->min;
  if (src->max > dst->max)
    dst->max = src->max;
  dst->sum = dst->sum + src->sum < dst->sum ? UINT64_MAX : dst->sum + src->sum;
}

uint64_t load_hist_percentile(const load_hist *h, double q) {
  if (h->count == 0)
    return 0;
  if (q >= 100.0)
    return h->max;
  double r = ceil(q / 100.0 * (double)h->count);
  uint64_t rank = r < 1.0 ? 1 : (uint64_t)r;
  uint64_t seen = 0;
  for (size_t i = 0; i < LOAD_HIST_BUCKETS; i++) {
    seen += h->buckets[i];
    if (seen >= rank) {
      uint64_t v = load_hist_highest(i);
      return v > h->max ? h->max : v;
    }
  }
  return h->max;
}

double load_hist_mean(const load_hist *h) {
  return h->count ? (double)h->sum / (double)h->count : 0.0;
}

json_t *load_hist_json(const load_hist *h) {
  json_t *b = json_array();
  for (size_t i = 0; i < LOAD_HIST_BUCKETS; i++)
    if (h->buckets[i])
      json_array_append_new(b, json_pack("[II]", (json_int_t)i, (json_int_t)h->buckets[i]));
  return json_pack("{sI sI sI sI so}", "n", (json_int_t)h->count, "min",
                   (json_int_t)(h->count ? h->min : 0), "max", (json_int_t)h->max, "sum",
                   (json_int_t)(h->sum > INT64_MAX ? INT64_MAX : h->sum), "b", b);
}
