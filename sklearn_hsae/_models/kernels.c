/* The routed child path's CPU kernels (projections, routing, child selection), built by
 * native.py.
 *
 * Plain C99, no torch headers: native.py compiles this file once per machine with the
 * system C compiler into a cached shared library and calls it through ctypes, which
 * releases the GIL, so Python threads can run disjoint ranges of one call in parallel.
 *
 * Every output element is computed by exactly one call, summing in a fixed order that
 * does not depend on how the work was split: results are bitwise reproducible for any
 * thread count. Each function returns 0, or 1 when an index is out of range (nothing
 * past that point is written; the caller raises).
 *
 * Shapes (row-major, contiguous):
 *   table (R, d)       input rows; a slot whose row is R (padding) reads a row of zeros
 *   W (m, s, d)        one s x d matrix per expert
 *   rows (n_tiles, T)  row of every tile slot
 *   expert (n_tiles,)  expert of every tile; tiles of one expert are contiguous
 *   start (m + 1,)     tiles of expert p are start[p] .. start[p + 1] - 1
 */
#include <stdint.h>
#include <string.h>

/* Ask for the next row while this one is being used: rows are scattered over the
 * table, so each one starts with a cache miss the hardware prefetcher cannot predict. */
#define PREFETCH(ptr, n)                                                                  \
    do {                                                                                  \
        const char* _p = (const char*)(ptr);                                              \
        for (int64_t _b = 0; _b < (int64_t)(n); _b += 64) __builtin_prefetch(_p + _b);    \
    } while (0)

/* Inside a loop over the slots q < end of one expert, at a slot holding row r: let the
 * next slot join it when it holds a row too (two = 1), so that each load of the expert's
 * block and of its accumulators serves both rows; prefetch the rows after them. Defines
 * two, nxt (the slot after the pair), x, y (the rows; y = x alone) and gx, gy. */
#define ROW_PAIR(REAL)                                                                    \
    int64_t r2 = q + 1 < end ? rows[q + 1] : R;                                           \
    int two = r2 >= 0 && r2 < R;                                                          \
    int64_t nxt = q + 1 + two;                                                            \
    if (nxt < end && rows[nxt] >= 0 && rows[nxt] < R)                                     \
        PREFETCH(table + rows[nxt] * d, d * sizeof(REAL));                                \
    if (two && nxt < end - 1 && rows[nxt + 1] >= 0 && rows[nxt + 1] < R)                  \
        PREFETCH(table + rows[nxt + 1] * d, d * sizeof(REAL));                            \
    const REAL* x = table + r * d;                                                        \
    const REAL* y = table + (two ? r2 : r) * d;                                           \
    const REAL* gx = g + q * s;                                                           \
    const REAL* gy = g + (q + 1) * s;

/* pair_dot: out[t, i, j] = sum_c W[expert[t], j, c] * table[rows[t, i], c], tiles [t0, t1) */
#define PAIR_DOT(NAME, REAL)                                                              \
int NAME(const REAL* table, const REAL* W, const int64_t* rows, const int64_t* expert,   \
         REAL* out, int64_t t0, int64_t t1, int64_t T, int64_t s, int64_t d,             \
         int64_t R, int64_t m) {                                                          \
    for (int64_t t = t0; t < t1; ++t) {                                                   \
        if (expert[t] < 0 || expert[t] >= m) return 1;                                    \
        const REAL* w = W + expert[t] * s * d;                                            \
        for (int64_t i = 0; i < T; ++i) {                                                 \
            int64_t r = rows[t * T + i];                                                  \
            REAL* o = out + (t * T + i) * s;                                              \
            if (r < 0 || r > R) return 1;                                                 \
            if (r == R) { for (int64_t j = 0; j < s; ++j) o[j] = 0; continue; }           \
            if (i + 1 < T && rows[t * T + i + 1] >= 0 && rows[t * T + i + 1] < R)         \
                PREFETCH(table + rows[t * T + i + 1] * d, d * sizeof(REAL));              \
            const REAL* x = table + r * d;                                                \
            int64_t j = 0;                                                                \
            for (; j + 4 <= s; j += 4) { /* four subspace rows per pass over x */         \
                const REAL *w0 = w + j * d, *w1 = w0 + d, *w2 = w1 + d, *w3 = w2 + d;     \
                REAL a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                      \
                _Pragma("omp simd reduction(+:a0,a1,a2,a3)")                              \
                for (int64_t c = 0; c < d; ++c) {                                         \
                    REAL xv = x[c];                                                       \
                    a0 += w0[c] * xv; a1 += w1[c] * xv; a2 += w2[c] * xv; a3 += w3[c] * xv; \
                }                                                                         \
                o[j] = a0; o[j + 1] = a1; o[j + 2] = a2; o[j + 3] = a3;                   \
            }                                                                             \
            for (; j < s; ++j) {                                                          \
                const REAL* wj = w + j * d;                                               \
                REAL a = 0;                                                               \
                _Pragma("omp simd reduction(+:a)")                                        \
                for (int64_t c = 0; c < d; ++c) a += wj[c] * x[c];                        \
                o[j] = a;                                                                 \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    return 0;                                                                             \
}

/* expert_outer: out[p, j, c] = sum over the tiles t of p and slots i, in that order, of
 * g[t, i, j] * table[rows[t, i], c]; experts [p0, p1). Each expert's s x d block stays in
 * L1 while its rows stream past once. */
#define EXPERT_OUTER(NAME, REAL)                                                          \
int NAME(const REAL* g, const REAL* table, const int64_t* rows, const int64_t* start,    \
         REAL* out, int64_t p0, int64_t p1, int64_t T, int64_t s, int64_t d,             \
         int64_t R, int64_t n_tiles) {                                                    \
    for (int64_t p = p0; p < p1; ++p) {                                                   \
        REAL* o = out + p * s * d;                                                        \
        memset(o, 0, sizeof(REAL) * s * d);                                               \
        if (start[p] < 0 || start[p + 1] > n_tiles) return 1;                             \
        int64_t end = start[p + 1] * T;                                                   \
        for (int64_t q = start[p] * T; q < end;) {                                        \
            int64_t r = rows[q];                                                          \
            if (r < 0 || r > R) return 1;                                                 \
            if (r == R) { ++q; continue; }                                                \
            /* Two rows at once when the next slot holds one (see ROW_PAIR). */           \
            ROW_PAIR(REAL)                                                                \
            int64_t j = 0;                                                                \
            for (; j + 2 <= s; j += 2) {                                                  \
                REAL g00 = gx[j], g01 = gx[j + 1];                                        \
                REAL g10 = two ? gy[j] : 0, g11 = two ? gy[j + 1] : 0;                    \
                REAL *o0 = o + j * d, *o1 = o0 + d;                                       \
                _Pragma("omp simd")                                                       \
                for (int64_t c = 0; c < d; ++c) {                                         \
                    REAL xv = x[c], yv = y[c];                                            \
                    o0[c] += g00 * xv + g10 * yv;                                         \
                    o1[c] += g01 * xv + g11 * yv;                                         \
                }                                                                         \
            }                                                                             \
            for (; j < s; ++j) {                                                          \
                REAL g0 = gx[j], g1 = two ? gy[j] : 0;                                    \
                REAL* oj = o + j * d;                                                     \
                _Pragma("omp simd")                                                       \
                for (int64_t c = 0; c < d; ++c) oj[c] += g0 * x[c] + g1 * y[c];           \
            }                                                                             \
            q = nxt;                                                                      \
        }                                                                                 \
    }                                                                                     \
    return 0;                                                                             \
}

/* dot_outer: both of expert_outer(g, table) -> outer and pair_dot(table, W) -> dot in one
 * pass over the rows, experts [p0, p1): the backward of the up-projection, where the
 * output gradient's rows give the subspace gradient and the weight gradient. */
#define DOT_OUTER(NAME, REAL)                                                             \
int NAME(const REAL* g, const REAL* table, const REAL* W, const int64_t* rows,           \
         const int64_t* start, REAL* dot, REAL* outer, int64_t p0, int64_t p1,           \
         int64_t T, int64_t s, int64_t d, int64_t R, int64_t n_tiles) {                  \
    for (int64_t p = p0; p < p1; ++p) {                                                   \
        REAL* o = outer + p * s * d;                                                      \
        const REAL* w = W + p * s * d;                                                    \
        memset(o, 0, sizeof(REAL) * s * d);                                               \
        if (start[p] < 0 || start[p + 1] > n_tiles) return 1;                             \
        int64_t end = start[p + 1] * T;                                                   \
        for (int64_t q = start[p] * T; q < end;) {                                        \
            int64_t r = rows[q];                                                          \
            if (r < 0 || r > R) return 1;                                                 \
            if (r == R) { for (int64_t j = 0; j < s; ++j) dot[q * s + j] = 0; ++q; continue; } \
            /* Two rows at once when the next slot holds one (see ROW_PAIR). */           \
            ROW_PAIR(REAL)                                                                \
            for (int64_t j = 0; j < s; ++j) {                                             \
                REAL ax = 0, ay = 0, g0 = gx[j], g1 = two ? gy[j] : 0;                    \
                REAL* oj = o + j * d;                                                     \
                const REAL* wj = w + j * d;                                               \
                _Pragma("omp simd reduction(+:ax,ay)")                                    \
                for (int64_t c = 0; c < d; ++c) {                                         \
                    REAL xv = x[c], yv = y[c], wv = wj[c];                                \
                    ax += wv * xv; ay += wv * yv;                                         \
                    oj[c] += g0 * xv + g1 * yv;                                           \
                }                                                                         \
                dot[q * s + j] = ax;                                                      \
                if (two) dot[(q + 1) * s + j] = ay;                                       \
            }                                                                             \
            q = nxt;                                                                      \
        }                                                                                 \
    }                                                                                     \
    return 0;                                                                             \
}

/* pair_sum: out[b, c] = sum over the pairs (t, i) with rows[t, i] == b, by ascending
 * expert, of sum_j v[t, i, j] * W[expert[t], j, c]; output rows [b0, b1). Rows rise
 * within each expert's run of slots (pairs are sorted by expert, stably), so a binary
 * search finds the part of every run that lands in [b0, b1); each expert's s x d block
 * is read once per call instead of once per pair. */
#define PAIR_SUM(NAME, REAL)                                                              \
int NAME(const REAL* v, const REAL* W, const int64_t* rows, const int64_t* start,        \
         REAL* out, int64_t b0, int64_t b1, int64_t T, int64_t s, int64_t d,             \
         int64_t R, int64_t m) {                                                          \
    memset(out + b0 * d, 0, sizeof(REAL) * (b1 - b0) * d);                                \
    for (int64_t p = 0; p < m; ++p) {                                                     \
        int64_t lo = start[p] * T, hi = start[p + 1] * T;                                 \
        if (lo < 0 || hi < lo || hi > start[m] * T) return 1;                             \
        while (lo < hi) { /* first slot of the run whose row is >= b0 */                  \
            int64_t mid = lo + (hi - lo) / 2;                                             \
            if (rows[mid] < b0) lo = mid + 1; else hi = mid;                              \
        }                                                                                 \
        const REAL* w = W + p * s * d;                                                    \
        for (int64_t q = lo; q < start[p + 1] * T; ++q) {                                 \
            int64_t r = rows[q];                                                          \
            if (r >= b1) break;                                                           \
            if (r < 0 || r > R) return 1;                                                 \
            REAL* o = out + r * d;                                                        \
            const REAL* vv = v + q * s;                                                   \
            if (q + 1 < start[p + 1] * T && rows[q + 1] < b1)                             \
                PREFETCH(out + rows[q + 1] * d, d * sizeof(REAL));                        \
            int64_t j = 0;                                                                \
            for (; j + 4 <= s; j += 4) {                                                  \
                REAL v0 = vv[j], v1 = vv[j + 1], v2 = vv[j + 2], v3 = vv[j + 3];          \
                const REAL *w0 = w + j * d, *w1 = w0 + d, *w2 = w1 + d, *w3 = w2 + d;     \
                _Pragma("omp simd")                                                       \
                for (int64_t c = 0; c < d; ++c)                                           \
                    o[c] += v0 * w0[c] + v1 * w1[c] + v2 * w2[c] + v3 * w3[c];            \
            }                                                                             \
            for (; j < s; ++j) {                                                          \
                REAL vj = vv[j];                                                          \
                const REAL* wj = w + j * d;                                               \
                _Pragma("omp simd")                                                       \
                for (int64_t c = 0; c < d; ++c) o[c] += vj * wj[c];                       \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    return 0;                                                                             \
}

/* child_fwd: each parent's tiny child SAE on the subspace vectors u (n_tiles, T, s),
 * tiles [t0, t1): pre[c] = E[p, c] . u, the best child (first largest relu(pre)),
 * act = relu(pre[best]), v = act * D[p, best]; padding slots give 0, 0, 0. */
#define CHILD_FWD(NAME, REAL)                                                             \
int NAME(const REAL* u, const REAL* E, const REAL* D, const int64_t* expert,             \
         const int64_t* rows, REAL* v, REAL* act, int64_t* arg, int64_t t0, int64_t t1,   \
         int64_t T, int64_t s, int64_t C, int64_t R, int64_t m) {                         \
    for (int64_t t = t0; t < t1; ++t) {                                                   \
        int64_t p = expert[t];                                                            \
        if (p < 0 || p >= m) return 1;                                                    \
        const REAL* e = E + p * C * s;                                                    \
        for (int64_t i = 0; i < T; ++i) {                                                 \
            int64_t q = t * T + i;                                                        \
            const REAL* uu = u + q * s;                                                   \
            REAL best = 0;                                                                \
            int64_t c_best = 0;                                                           \
            if (rows[q] != R)                                                             \
                for (int64_t c = 0; c < C; ++c) {                                         \
                    REAL pre = 0;                                                         \
                    for (int64_t j = 0; j < s; ++j) pre += e[c * s + j] * uu[j];          \
                    if (pre > best) { best = pre; c_best = c; }                           \
                }                                                                         \
            act[q] = best;                                                                \
            arg[q] = c_best;                                                              \
            const REAL* atom = D + (p * C + c_best) * s;                                  \
            for (int64_t j = 0; j < s; ++j) v[q * s + j] = best * atom[j];                \
        }                                                                                 \
    }                                                                                     \
    return 0;                                                                             \
}

/* child_bwd: from grad_v, the gradients of u (n_tiles, T, s), of E and of D (m, C, s),
 * experts [p0, p1), each expert's slots summed in tile order. Only the chosen child of a
 * slot has a gradient, and its encoder row only where act > 0 (relu). */
#define CHILD_BWD(NAME, REAL)                                                             \
int NAME(const REAL* grad_v, const REAL* u, const REAL* E, const REAL* D,                \
         const REAL* act, const int64_t* arg, const int64_t* rows, const int64_t* start,  \
         REAL* grad_u, REAL* grad_E, REAL* grad_D, int64_t p0, int64_t p1, int64_t T,     \
         int64_t s, int64_t C, int64_t R, int64_t n_tiles) {                              \
    for (int64_t p = p0; p < p1; ++p) {                                                   \
        REAL* gE = grad_E + p * C * s;                                                    \
        REAL* gD = grad_D + p * C * s;                                                    \
        memset(gE, 0, sizeof(REAL) * C * s);                                              \
        memset(gD, 0, sizeof(REAL) * C * s);                                              \
        if (start[p] < 0 || start[p + 1] > n_tiles) return 1;                             \
        for (int64_t q = start[p] * T; q < start[p + 1] * T; ++q) {                       \
            REAL* gu = grad_u + q * s;                                                    \
            REAL a = act[q];                                                              \
            int64_t c = arg[q];                                                           \
            if (rows[q] == R || !(a > 0)) { for (int64_t j = 0; j < s; ++j) gu[j] = 0; continue; } \
            if (c < 0 || c >= C) return 1;                                                \
            const REAL* gv = grad_v + q * s;                                              \
            const REAL* atom = D + (p * C + c) * s;                                       \
            const REAL* enc = E + (p * C + c) * s;                                        \
            const REAL* uu = u + q * s;                                                   \
            REAL g_act = 0;                                                               \
            for (int64_t j = 0; j < s; ++j) { g_act += gv[j] * atom[j]; gD[c * s + j] += a * gv[j]; } \
            for (int64_t j = 0; j < s; ++j) { gu[j] = g_act * enc[j]; gE[c * s + j] += g_act * uu[j]; } \
        }                                                                                 \
    }                                                                                     \
    return 0;                                                                             \
}

PAIR_DOT(pair_dot_f32, float)
PAIR_DOT(pair_dot_f64, double)
EXPERT_OUTER(expert_outer_f32, float)
EXPERT_OUTER(expert_outer_f64, double)
DOT_OUTER(dot_outer_f32, float)
DOT_OUTER(dot_outer_f64, double)
PAIR_SUM(pair_sum_f32, float)
PAIR_SUM(pair_sum_f64, double)
CHILD_FWD(child_fwd_f32, float)
CHILD_FWD(child_fwd_f64, double)
CHILD_BWD(child_bwd_f32, float)
CHILD_BWD(child_bwd_f64, double)

/* Routing: the tile layout of the active (row, expert) slots of a (B, k) TopK code, as
 * grouped.py's make_tiling and make_route build it with sorts, here by counting.
 * route_count: counts[e] = active slots of expert e; returns their total, or -1 when an
 * index is out of range. */
int64_t route_count(const uint8_t* active, const int64_t* indices, int64_t n, int64_t E,
                    int64_t* counts) {
    int64_t total = 0;
    memset(counts, 0, sizeof(int64_t) * E);
    for (int64_t q = 0; q < n; ++q) {
        if (!active[q]) continue;
        if (indices[q] < 0 || indices[q] >= E) return -1;
        ++counts[indices[q]];
        ++total;
    }
    return total;
}

/* route_fill: place every active slot q (in row-major order, so rows rise within each
 * expert's run) at the next free position of its expert's tiles, which start at tile
 * start[e]. Writes rows[pos] = q / k, pair[pos] = the slot's rank among active slots,
 * slot_pos[q] = pos (left as is for inactive slots), pair_pos[rank] = pos, and
 * expert[t] for every tile. fill (E,) is scratch. Returns 0. */
int route_fill(const uint8_t* active, const int64_t* indices, int64_t n, int64_t k, int64_t E,
               int64_t T, const int64_t* start, int64_t* fill, int64_t* rows, int64_t* pair,
               int64_t* slot_pos, int64_t* pair_pos, int64_t* expert) {
    memset(fill, 0, sizeof(int64_t) * E);
    int64_t rank = 0;
    for (int64_t q = 0; q < n; ++q) {
        if (!active[q]) continue;
        int64_t e = indices[q];
        int64_t pos = start[e] * T + fill[e]++;
        rows[pos] = q / k;
        pair[pos] = rank;
        slot_pos[q] = pos;
        pair_pos[rank++] = pos;
    }
    for (int64_t e = 0; e < E; ++e)
        for (int64_t t = start[e]; t < start[e + 1]; ++t) expert[t] = e;
    return 0;
}
