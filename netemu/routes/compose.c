/* The inner loop of netemu.routes.composition: for each destination, every node's
 * best path through a hub, kept where it beats the path inside the destination's
 * domain.  Pure computation on arrays netemu owns (no system calls); built by
 * netemu/native.py and loaded with ctypes.
 *
 *   best[j][s], via[j][s]   in: the domain path (inf / -1 outside the domain);
 *                           out: the shorter of it and min over hubs x of
 *                                hub_dist[x][s] + hub_dist[x][dests[j]], with via
 *                                toward[x][s] (the next hop from s toward x).
 *
 * Hubs are tried in the order given and a later one wins only when strictly
 * shorter, as in the NumPy version, so both give the same table.
 */
#include <stdint.h>

void compose(int64_t k, int64_t n, const int64_t *dests, int64_t h, const int64_t *hubs,
             const float *hub_dist, const int32_t *toward, float *best, int32_t *via)
{
    for (int64_t j = 0; j < k; j++) {
        float *b = best + j * n;
        int32_t *v = via + j * n;
        for (int64_t i = 0; i < h; i++) {
            const float *dx = hub_dist + hubs[i] * n;
            const int32_t *tx = toward + hubs[i] * n;
            const float to_dest = dx[dests[j]];
            for (int64_t s = 0; s < n; s++) {
                float c = dx[s] + to_dest;
                int better = c < b[s];
                b[s] = better ? c : b[s];
                v[s] = better ? tx[s] : v[s];
            }
        }
    }
}
