/* ORTC for many (node, block) pairs: netemu.routes.aggregation's ortc(), compiled.
 * Pure computation on arrays netemu owns (no system calls); built by netemu/native.py
 * and loaded with ctypes, like compose.c.
 *
 * For each pair i, node s = nodes[i], the block's 2^depth addresses are the leaves of
 * a binary trie (heap order: root 1, children 2j and 2j+1, leaves L..2L-1). A leaf's
 * set is the bit of its next hop (the neighbour's rank; bit 63: unreachable), or all
 * bits where it does not matter (no node there, or s itself: its table says s).  Bottom-up, a parent's
 * set is its children's intersection, else their union; top-down, a prefix goes
 * wherever the hop inherited from above is not in the set, to the set's lowest bit.
 * The prefixes are written in the order of their keys:
 *
 *   key = s << 32 | offset << 6 | prefix length,   via = neighbour[s][bit] (-1: bit 63)
 *
 * Returns the pairs done: fewer than npairs when the next one might not fit in what
 * is left of capacity (the caller grows the buffers and goes on from there), or
 * -1 - i when pair i's table names a next hop that is not one of s's neighbours.
 */
#include <stdint.h>

#define UNREACHABLE (-1)
#define UNREACHABLE_BIT 63
#define MAX_LEAVES 256

static inline uint64_t lowest(uint64_t m) { return m & (~m + 1); }

int64_t ortc(int64_t n, int64_t depth, const int32_t *hops, const int8_t *rank,
             const int64_t *neighbour, int64_t npairs, const int64_t *nodes,
             const int64_t *blocks, int64_t capacity, int64_t *keys, int64_t *via,
             int64_t *written)
{
    const int64_t leaves = (int64_t)1 << depth;
    uint64_t set[2 * MAX_LEAVES], chosen[2 * MAX_LEAVES];
    uint16_t at_offset[MAX_LEAVES];  /* levels of the prefixes emitted at each offset */
    int64_t w = *written;
    for (int64_t i = 0; i < npairs; i++) {
        if (capacity - w < 2 * leaves - 1)
            return i;
        const int64_t s = nodes[i];
        const int64_t first = blocks[i] << depth;  /* address offset of leaf 0 */
        for (int64_t j = 0; j < leaves; j++) {
            const int64_t d = first + j - 1;  /* offset o is node o - 1 */
            uint64_t m = ~(uint64_t)0;
            const int32_t hop = d >= 0 && d < n ? hops[s * n + d] : (int32_t)s;
            if (hop != s) {  /* s itself: its own address, or no node there */
                if (hop == UNREACHABLE) {
                    m = (uint64_t)1 << UNREACHABLE_BIT;
                } else {
                    const int8_t r = rank[s * n + hop];
                    if (r < 0)
                        return -1 - i;
                    m = (uint64_t)1 << r;
                }
            }
            set[leaves + j] = m;
        }
        for (int64_t j = leaves - 1; j >= 1; j--) {
            const uint64_t both = set[2 * j] & set[2 * j + 1];
            set[j] = both ? both : set[2 * j] | set[2 * j + 1];
        }
        /* Top-down, level by level; an emitted node is noted at its offset (bit: its
         * level), so the prefixes come out in key order without walking the trie. */
        chosen[1] = lowest(set[1]);
        for (int64_t o = 0; o < leaves; o++)
            at_offset[o] = 0;
        at_offset[0] = 1;
        for (int level = 1; level <= depth; level++) {
            const int64_t begin = (int64_t)1 << level;
            for (int64_t j = begin; j < 2 * begin; j++) {
                const uint64_t inherited = chosen[j >> 1];
                const int emit = (set[j] & inherited) == 0;
                chosen[j] = emit ? lowest(set[j]) : inherited;
                at_offset[(j - begin) << (depth - level)] |= (uint16_t)(emit << level);
            }
        }
        for (int64_t o = 0; o < leaves; o++) {
            for (uint32_t levels = at_offset[o]; levels; levels &= levels - 1) {
                const int level = __builtin_ctz(levels);
                const int64_t j = ((int64_t)1 << level) + (o >> (depth - level));
                const int bit = __builtin_ctzll(chosen[j]);
                keys[w] = (s << 32) | ((first | o) << 6) | (32 - depth + level);
                via[w] = bit == UNREACHABLE_BIT ? UNREACHABLE : neighbour[s * 64 + bit];
                w++;
            }
        }
        *written = w;
    }
    return npairs;
}
