/* xoshiro256** seeded through splitmix64: fast, with a fixed bit-exact sequence on every platform, so the same
 * seed gives the same weights and the same shuffles everywhere. */

#include "core/internal.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t lenet__rng_mix(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ splitmix64(&b);
    return splitmix64(&x);
}

void lenet__rng_seed(lenet_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

uint64_t lenet__rng_u64(lenet_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float lenet__rng_uniform(lenet_rng *r)
{
    return (float)(lenet__rng_u64(r) >> 40) * 0x1.0p-24f;
}

uint64_t lenet__rng_below(lenet_rng *r, uint64_t bound)
{
    /* Rejection on the top bits: unbiased and simple; bound is at most the data set size. */
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t x = lenet__rng_u64(r);
        if (x >= threshold)
            return x % bound;
    }
}
