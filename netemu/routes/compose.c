/* The inner loop of netemu.routes.composition: every node's best path through a hub
 * toward each destination, kept where it beats the path inside the destination's
 * domain.  Pure computation on arrays netemu owns (no system calls); built by
 * netemu/native.py and loaded with ctypes.
 *
 *   best[s][j], via[s][j]   in: the domain path (inf / -1 outside the domain);
 *                           out: the shorter of it and, over hubs x,
 *                                hub_dist[x][s] + to_dest[x][j], via toward[x][s]
 *                                (the next hop from s toward x).
 *
 * Node-major like the router's table (s outer, destinations inner: contiguous, so
 * the compiler vectorises it). Hubs are tried in the order given and a later one
 * wins only when strictly shorter, as in the NumPy version: the same table.
 */
#include <stdint.h>

void compose(int64_t n, int64_t k, int64_t h, const int64_t *hubs, const float *to_dest,
             const float *hub_dist, const int32_t *toward, float *best, int32_t *via)
{
    for (int64_t s = 0; s < n; s++) {
        float *b = best + s * k;
        int32_t *v = via + s * k;
        for (int64_t i = 0; i < h; i++) {
            const float from = hub_dist[hubs[i] * n + s];
            const int32_t hop = toward[hubs[i] * n + s];
            const float *td = to_dest + i * k;
            for (int64_t j = 0; j < k; j++) {
                float c = from + td[j];
                int better = c < b[j];
                b[j] = better ? c : b[j];
                v[j] = better ? hop : v[j];
            }
        }
    }
}
