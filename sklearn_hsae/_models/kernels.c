/* The routed child path's CPU kernels (projections, routing, child selection), built by
 * native.py.
 *
 * C99 plus GCC/clang vector extensions, no torch headers: native.py compiles this file
 * once per machine with the system C compiler into a cached shared library (a compiler
 * without the extensions fails the build, and the caller stays eager) and calls it
 * through ctypes. Disjoint ranges of one call run in parallel on OpenMP threads (built
 * with -fopenmp; see RANGES) or, without OpenMP, on Python threads (ctypes releases
 * the GIL).
 *
 * Every output element is computed by exactly one range, summing in a fixed order that
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
#ifdef _OPENMP
#include <omp.h>
#endif

/* 32-byte vectors (GCC/clang vector extensions; the compiler splits them where the CPU
 * has narrower registers), loadable from any element address. */
typedef float vf32 __attribute__((vector_size(32), aligned(sizeof(float))));
typedef double vf64 __attribute__((vector_size(32), aligned(sizeof(double))));
#define LANES(REAL) ((int64_t)(32 / sizeof(REAL)))

/* Keep a loaded vector in a register: gcc otherwise folds the load into every
 * multiply-add that reads it, one load per use (x86 only; elsewhere a no-op). */
#if defined(__x86_64__) || defined(__i386__)
#define PIN(v) __asm__("" : "+x"(v))
#else
#define PIN(v) ((void)0)
#endif

/* Lane shuffles of two vectors by constant indices (clang and gcc spell them apart). */
#if defined(__clang__)
#define SHUFFLE(MASK_T, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(MASK_T, a, b, ...) __builtin_shuffle(a, b, (MASK_T){__VA_ARGS__})
#endif
typedef int32_t vi32 __attribute__((vector_size(32)));
typedef int64_t vi64 __attribute__((vector_size(32)));

/* The lane sums of four vectors, out[i] = sum of a_i's lanes, by pairwise shuffles (a
 * scalar loop over the lanes compiled to ~100 extracts and spills per call of dot_rows).
 * DOT_ROWS after these sums and without its software prefetch (which cost a load slot
 * per line: 108 per three rows), one thread, B = 1024, k = 32, 256 experts, s = 4,
 * d = 576, medians of 11 interleaved calls: pair_dot 3.10 vs 4.32 ms; at B = 4096 and
 * 2048 experts 16.9 vs 21.8 ms. */
static inline void hsum4_f32(vf32 a0, vf32 a1, vf32 a2, vf32 a3, float* out) {
#define EVEN_ODD(a, b) (SHUFFLE(vi32, a, b, 0, 8, 2, 10, 4, 12, 6, 14)                  \
                        + SHUFFLE(vi32, a, b, 1, 9, 3, 11, 5, 13, 7, 15))
    vf32 s01 = EVEN_ODD(a0, a1), s23 = EVEN_ODD(a2, a3);
#undef EVEN_ODD
    vf32 t = SHUFFLE(vi32, s01, s23, 0, 1, 8, 9, 4, 5, 12, 13)
           + SHUFFLE(vi32, s01, s23, 2, 3, 10, 11, 6, 7, 14, 15);
    for (int i = 0; i < 4; ++i) out[i] = t[i] + t[i + 4];
}

static inline void hsum4_f64(vf64 a0, vf64 a1, vf64 a2, vf64 a3, double* out) {
    vf64 s01 = SHUFFLE(vi64, a0, a1, 0, 4, 2, 6) + SHUFFLE(vi64, a0, a1, 1, 5, 3, 7);
    vf64 s23 = SHUFFLE(vi64, a2, a3, 0, 4, 2, 6) + SHUFFLE(vi64, a2, a3, 1, 5, 3, 7);
    out[0] = s01[0] + s01[2]; out[1] = s01[1] + s01[3];
    out[2] = s23[0] + s23[2]; out[3] = s23[1] + s23[3];
}

/* BLEND: lane-wise take ? a : b (take an integer mask vector, -1 or 0 per lane, as a
 * vector comparison gives); hmax: the largest lane (no NaN lanes); hmin: the smallest
 * lane of an integer vector; both by halving shuffles. */
#define BLEND(VEC, IVEC, take, a, b) ((VEC)(((IVEC)(a) & (take)) | ((IVEC)(b) & ~(take))))
static inline float hmax_f32(vf32 a) {
    vf32 b = SHUFFLE(vi32, a, a, 4, 5, 6, 7, 0, 1, 2, 3);
    a = BLEND(vf32, vi32, b > a, b, a);
    b = SHUFFLE(vi32, a, a, 2, 3, 0, 1, 6, 7, 4, 5);
    a = BLEND(vf32, vi32, b > a, b, a);
    b = SHUFFLE(vi32, a, a, 1, 0, 3, 2, 5, 4, 7, 6);
    return b[0] > a[0] ? b[0] : a[0];
}
static inline int32_t hmin_i32(vi32 a) {
    vi32 b = SHUFFLE(vi32, a, a, 4, 5, 6, 7, 0, 1, 2, 3);
    a = BLEND(vi32, vi32, b < a, b, a);
    b = SHUFFLE(vi32, a, a, 2, 3, 0, 1, 6, 7, 4, 5);
    a = BLEND(vi32, vi32, b < a, b, a);
    return a[1] < a[0] ? a[1] : a[0];
}
static inline double hmax_f64(vf64 a) {
    vf64 b = SHUFFLE(vi64, a, a, 2, 3, 0, 1);
    a = BLEND(vf64, vi64, b > a, b, a);
    return a[1] > a[0] ? a[1] : a[0];
}
static inline int64_t hmin_i64(vi64 a) {
    vi64 b = SHUFFLE(vi64, a, a, 2, 3, 0, 1);
    a = BLEND(vi64, vi64, b < a, b, a);
    return a[1] < a[0] ? a[1] : a[0];
}

/* Inside a loop over the slots q < end of one expert, at a slot holding row r: let the
 * next slot join it when it holds a row too (two = 1), so that each load of the expert's
 * block and of its accumulators serves both rows. Defines two, nxt (the slot after the
 * pair), x, y (the rows; y = x alone) and gx, gy. No software prefetch of the next rows
 * (nor in dot_rows and pair_sum): one prefetch per line of a row cost a load slot each,
 * and the loops ran faster without (dot_outer at s = 1, one thread, B = 1024, k = 32,
 * 1024 latents: 3.47-3.53 vs 4.01-4.13 ms; equal at B = 4096). */
#define ROW_PAIR(REAL)                                                                    \
    int64_t r2 = q + 1 < end ? rows[q + 1] : R;                                           \
    int two = r2 >= 0 && r2 < R;                                                          \
    int64_t nxt = q + 1 + two;                                                            \
    const REAL* x = table + r * d;                                                        \
    const REAL* y = table + (two ? r2 : r) * d;                                           \
    const REAL* gx = g + q * s;                                                           \
    const REAL* gy = g + (q + 1) * s;

/* The row-reading contractions are built from two loops over the slots [q0, q1) of one
 * expert's s x d block w, register-blocked so that many independent sums are in flight
 * (one chain of multiply-adds per output waits on its own latency; native.py builds with
 * -ffp-contract=fast so that a * b + c is one fused instruction). Measured against the
 * one-chain loops (one thread, B = 4096, k = 32, 2048 experts, s = 4, d = 576, medians
 * of 11 interleaved calls): dot 22.6 vs 24.3 ms, outer 19.6 vs 24.7 ms, both in one call
 * 39.3 vs 51.4 ms.
 *
 * DOT_ROWS: out[q, j] = sum_c w[j, c] * table[rows[q], c]. Up to three rows and four
 * subspace rows at a time: twelve independent sums, each expert row loaded once for all
 * rows (PIN: 7 loads per 12 multiply-adds, where gcc's folding made it 15; pair_dot
 * 20.9 vs 24.2 and 19.9 vs 22.5 ms in two runs as above, 14.8 vs 16.4-17.6 ms with all
 * rows in L2). Padding slots (row R) get zeros. The caller has checked every row is in
 * [0, R]. */
#define DOT_ROWS(SUF, REAL)                                                               \
static void dot_rows_##SUF(const REAL* table, const REAL* w, const int64_t* rows,         \
                           int64_t q0, int64_t q1, REAL* out, int64_t s, int64_t d,       \
                           int64_t R) {                                                   \
    for (int64_t q = q0; q < q1;) {                                                       \
        int64_t r = rows[q];                                                              \
        REAL* o = out + q * s;                                                            \
        if (r == R) { for (int64_t j = 0; j < s; ++j) o[j] = 0; ++q; continue; }          \
        /* up to three consecutive slots holding rows (missing ones repeat x) */          \
        int n = 1;                                                                        \
        while (n < 3 && q + n < q1 && rows[q + n] != R) ++n;                              \
        int64_t nxt = q + n;                                                              \
        const REAL* x = table + r * d;                                                    \
        const REAL* y = n > 1 ? table + rows[q + 1] * d : x;                              \
        const REAL* z = n > 2 ? table + rows[q + 2] * d : x;                              \
        int64_t j = 0;                                                                    \
        for (; j + 4 <= s; j += 4) {                                                      \
            const REAL *w0 = w + j * d, *w1 = w0 + d, *w2 = w1 + d, *w3 = w2 + d;         \
            const int64_t L = LANES(REAL);                                                \
            v##SUF a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                \
            v##SUF b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};                                \
            v##SUF e0 = {0}, e1 = {0}, e2 = {0}, e3 = {0};                                \
            int64_t c = 0;                                                                \
            for (; c + L <= d; c += L) {                                                  \
                v##SUF xv = *(const v##SUF*)(x + c), yv = *(const v##SUF*)(y + c);        \
                v##SUF zv = *(const v##SUF*)(z + c);                                      \
                PIN(xv); PIN(yv); PIN(zv);                                                \
                v##SUF u = *(const v##SUF*)(w0 + c);                                      \
                PIN(u);                                                                   \
                a0 += u * xv; b0 += u * yv; e0 += u * zv;                                 \
                u = *(const v##SUF*)(w1 + c);                                             \
                PIN(u);                                                                   \
                a1 += u * xv; b1 += u * yv; e1 += u * zv;                                 \
                u = *(const v##SUF*)(w2 + c);                                             \
                PIN(u);                                                                   \
                a2 += u * xv; b2 += u * yv; e2 += u * zv;                                 \
                u = *(const v##SUF*)(w3 + c);                                             \
                PIN(u);                                                                   \
                a3 += u * xv; b3 += u * yv; e3 += u * zv;                                 \
            }                                                                             \
            REAL res[3][4];                                                               \
            hsum4_##SUF(a0, a1, a2, a3, res[0]);                                          \
            hsum4_##SUF(b0, b1, b2, b3, res[1]);                                          \
            hsum4_##SUF(e0, e1, e2, e3, res[2]);                                          \
            for (; c < d; ++c)                                                            \
                for (int jj = 0; jj < 4; ++jj) {                                          \
                    res[0][jj] += w[(j + jj) * d + c] * x[c];                             \
                    res[1][jj] += w[(j + jj) * d + c] * y[c];                             \
                    res[2][jj] += w[(j + jj) * d + c] * z[c];                             \
                }                                                                         \
            for (int i = 0; i < n; ++i)                                                   \
                for (int jj = 0; jj < 4; ++jj) o[i * s + j + jj] = res[i][jj];            \
        }                                                                                 \
        for (; j < s; ++j) { /* two vectors of columns per row: six independent sums */   \
            const REAL* wj = w + j * d;                                                   \
            const int64_t L = LANES(REAL);                                                \
            v##SUF a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0}, e0 = {0}, e1 = {0};            \
            int64_t c = 0;                                                                \
            for (; c + 2 * L <= d; c += 2 * L) {                                          \
                v##SUF u0 = *(const v##SUF*)(wj + c), u1 = *(const v##SUF*)(wj + c + L);  \
                a0 += u0 * *(const v##SUF*)(x + c); a1 += u1 * *(const v##SUF*)(x + c + L); \
                b0 += u0 * *(const v##SUF*)(y + c); b1 += u1 * *(const v##SUF*)(y + c + L); \
                e0 += u0 * *(const v##SUF*)(z + c); e1 += u1 * *(const v##SUF*)(z + c + L); \
            }                                                                             \
            a0 += a1; b0 += b1; e0 += e1;                                                 \
            REAL res[3] = {0, 0, 0};                                                      \
            for (int64_t l = 0; l < L; ++l) { res[0] += a0[l]; res[1] += b0[l]; res[2] += e0[l]; } \
            for (; c < d; ++c) { res[0] += wj[c] * x[c]; res[1] += wj[c] * y[c]; res[2] += wj[c] * z[c]; } \
            for (int i = 0; i < n; ++i) o[i * s + j] = res[i];                            \
        }                                                                                 \
        q = nxt;                                                                          \
    }                                                                                     \
}

/* OUTER_ROWS: o[j, c] = sum over the slots q of [q0, q1), in order, of
 * g[q, j] * table[rows[q], c] (o is overwritten). Four subspace rows times two vectors
 * of columns (or one row times eight vectors) stay in registers while the slots stream
 * past, so no store waits on a load; the expert's rows are re-read from cache for every
 * block of columns, the next block's line prefetched on the way. */
#define OUTER_ROWS(SUF, REAL)                                                             \
static void outer_rows_##SUF(const REAL* g, const REAL* table, const int64_t* rows,       \
                             int64_t q0, int64_t q1, REAL* o, int64_t s, int64_t d,       \
                             int64_t R) {                                                 \
    typedef v##SUF vec;                                                                   \
    const int64_t L = LANES(REAL), W2 = 2 * L;                                            \
    int64_t j = 0;                                                                        \
    for (; j + 4 <= s; j += 4) {                                                          \
        REAL *o0 = o + j * d, *o1 = o0 + d, *o2 = o1 + d, *o3 = o2 + d;                   \
        int64_t c = 0;                                                                    \
        for (; c + W2 <= d; c += W2) {                                                    \
            vec a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}; \
            for (int64_t q = q0; q < q1; ++q) {                                           \
                int64_t r = rows[q];                                                      \
                if (r == R) continue;                                                     \
                const REAL* x = table + r * d + c;                                        \
                if (c + 2 * W2 <= d) __builtin_prefetch(x + W2);                          \
                vec xa = *(const vec*)x, xb = *(const vec*)(x + L);                       \
                const REAL* gq = g + q * s + j;                                           \
                REAL g0 = gq[0], g1 = gq[1], g2 = gq[2], g3 = gq[3];                      \
                a0 += g0 * xa; b0 += g0 * xb; a1 += g1 * xa; b1 += g1 * xb;               \
                a2 += g2 * xa; b2 += g2 * xb; a3 += g3 * xa; b3 += g3 * xb;               \
            }                                                                             \
            *(vec*)(o0 + c) = a0; *(vec*)(o0 + c + L) = b0;                               \
            *(vec*)(o1 + c) = a1; *(vec*)(o1 + c + L) = b1;                               \
            *(vec*)(o2 + c) = a2; *(vec*)(o2 + c + L) = b2;                               \
            *(vec*)(o3 + c) = a3; *(vec*)(o3 + c + L) = b3;                               \
        }                                                                                 \
        for (; c < d; ++c) {                                                              \
            REAL a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                          \
            for (int64_t q = q0; q < q1; ++q) {                                           \
                int64_t r = rows[q];                                                      \
                if (r == R) continue;                                                     \
                REAL xv = table[r * d + c];                                               \
                const REAL* gq = g + q * s + j;                                           \
                a0 += gq[0] * xv; a1 += gq[1] * xv; a2 += gq[2] * xv; a3 += gq[3] * xv;   \
            }                                                                             \
            o0[c] = a0; o1[c] = a1; o2[c] = a2; o3[c] = a3;                               \
        }                                                                                 \
    }                                                                                     \
    for (; j < s; ++j) { /* one subspace row: eight vectors of columns in registers */    \
        REAL* oj = o + j * d;                                                             \
        int64_t c = 0;                                                                    \
        for (; c + 8 * L <= d; c += 8 * L) {                                              \
            vec a[8] = {{0}};                                                             \
            for (int64_t q = q0; q < q1; ++q) {                                           \
                int64_t r = rows[q];                                                      \
                if (r == R) continue;                                                     \
                const REAL* x = table + r * d + c;                                        \
                if (c + 16 * L <= d) __builtin_prefetch(x + 8 * L);                       \
                REAL gj = g[q * s + j];                                                   \
                for (int u = 0; u < 8; ++u) a[u] += gj * *(const vec*)(x + u * L);        \
            }                                                                             \
            for (int u = 0; u < 8; ++u) *(vec*)(oj + c + u * L) = a[u];                   \
        }                                                                                 \
        for (; c + L <= d; c += L) {                                                      \
            vec a = {0};                                                                  \
            for (int64_t q = q0; q < q1; ++q)                                             \
                if (rows[q] != R) a += g[q * s + j] * *(const vec*)(table + rows[q] * d + c); \
            *(vec*)(oj + c) = a;                                                          \
        }                                                                                 \
        for (; c < d; ++c) {                                                              \
            REAL a = 0;                                                                   \
            for (int64_t q = q0; q < q1; ++q)                                             \
                if (rows[q] != R) a += g[q * s + j] * table[rows[q] * d + c];             \
            oj[c] = a;                                                                    \
        }                                                                                 \
    }                                                                                     \
}

/* DOT_OUTER_FUSED: dot_rows and outer_rows of one expert in a single pass over the rows,
 * two rows at a time (see ROW_PAIR); faster than the two loops when s < 4, where the
 * register-blocked loops have too few independent sums. Rows checked by the caller. */
#define DOT_OUTER_FUSED(SUF, REAL)                                                        \
static void dot_outer_fused_##SUF(const REAL* g, const REAL* table, const REAL* w,        \
                                  const int64_t* rows, int64_t q0, int64_t end,           \
                                  REAL* dot, REAL* o, int64_t s, int64_t d, int64_t R) {  \
    memset(o, 0, sizeof(REAL) * s * d);                                                   \
    for (int64_t q = q0; q < end;) {                                                      \
        int64_t r = rows[q];                                                              \
        if (r == R) { for (int64_t j = 0; j < s; ++j) dot[q * s + j] = 0; ++q; continue; } \
        /* Two rows at once when the next slot holds one (see ROW_PAIR). */               \
        ROW_PAIR(REAL)                                                                    \
        for (int64_t j = 0; j < s; ++j) {                                                 \
            REAL ax = 0, ay = 0, g0 = gx[j], g1 = two ? gy[j] : 0;                        \
            REAL* oj = o + j * d;                                                         \
            const REAL* wj = w + j * d;                                                   \
            _Pragma("omp simd reduction(+:ax,ay)")                                        \
            for (int64_t c = 0; c < d; ++c) {                                             \
                REAL xv = x[c], yv = y[c], wv = wj[c];                                    \
                ax += wv * xv; ay += wv * yv;                                             \
                oj[c] += g0 * xv + g1 * yv;                                               \
            }                                                                             \
            dot[q * s + j] = ax;                                                          \
            if (two) dot[(q + 1) * s + j] = ay;                                           \
        }                                                                                 \
        q = nxt;                                                                          \
    }                                                                                     \
}

/* Every row of the slots [q0, q1) in [0, R] (R: padding)? */
static int rows_ok(const int64_t* rows, int64_t q0, int64_t q1, int64_t R) {
    for (int64_t q = q0; q < q1; ++q)
        if (rows[q] < 0 || rows[q] > R) return 0;
    return 1;
}

/* pair_dot: out[t, i, j] = sum_c W[expert[t], j, c] * table[rows[t, i], c], tiles [t0, t1) */
#define PAIR_DOT(NAME, SUF, REAL)                                                         \
static int NAME##_range(const REAL* table, const REAL* W, const int64_t* rows,            \
         const int64_t* expert, REAL* out, int64_t t0, int64_t t1, int64_t T, int64_t s,  \
         int64_t d, int64_t R, int64_t m) {                                               \
    for (int64_t t = t0; t < t1; ++t) {                                                   \
        if (expert[t] < 0 || expert[t] >= m || !rows_ok(rows, t * T, (t + 1) * T, R)) return 1; \
        dot_rows_##SUF(table, W + expert[t] * s * d, rows, t * T, (t + 1) * T, out, s, d, R); \
    }                                                                                     \
    return 0;                                                                             \
}

/* expert_outer: out[p, j, c] = sum over the tiles t of p and slots i, in that order, of
 * g[t, i, j] * table[rows[t, i], c]; experts [p0, p1). */
#define EXPERT_OUTER(NAME, SUF, REAL)                                                     \
static int NAME##_range(const REAL* g, const REAL* table, const int64_t* rows,            \
         const int64_t* start, REAL* out, int64_t p0, int64_t p1, int64_t T, int64_t s,   \
         int64_t d, int64_t R, int64_t n_tiles) {                                         \
    for (int64_t p = p0; p < p1; ++p) {                                                   \
        if (start[p] < 0 || start[p] > start[p + 1] || start[p + 1] > n_tiles) return 1;  \
        int64_t q0 = start[p] * T, q1 = start[p + 1] * T;                                 \
        if (!rows_ok(rows, q0, q1, R)) return 1;                                          \
        outer_rows_##SUF(g, table, rows, q0, q1, out + p * s * d, s, d, R);               \
    }                                                                                     \
    return 0;                                                                             \
}

/* dot_outer: both of expert_outer(g, table) -> outer and pair_dot(table, W) -> dot,
 * expert by expert, experts [p0, p1): the backward of the up-projection, where the
 * output gradient's rows give the subspace gradient and the weight gradient. The
 * second loop finds the expert's rows in cache. */
#define DOT_OUTER(NAME, SUF, REAL)                                                        \
static int NAME##_range(const REAL* g, const REAL* table, const REAL* W,                  \
         const int64_t* rows, const int64_t* start, REAL* dot, REAL* outer, int64_t p0,   \
         int64_t p1, int64_t T, int64_t s, int64_t d, int64_t R, int64_t n_tiles) {       \
    for (int64_t p = p0; p < p1; ++p) {                                                   \
        if (start[p] < 0 || start[p] > start[p + 1] || start[p + 1] > n_tiles) return 1;  \
        int64_t q0 = start[p] * T, q1 = start[p + 1] * T;                                 \
        if (!rows_ok(rows, q0, q1, R)) return 1;                                          \
        if (s < 4) {                                                                      \
            dot_outer_fused_##SUF(g, table, W + p * s * d, rows, q0, q1, dot, outer + p * s * d, s, d, R); \
            continue;                                                                     \
        }                                                                                 \
        dot_rows_##SUF(table, W + p * s * d, rows, q0, q1, dot, s, d, R);                 \
        outer_rows_##SUF(g, table, rows, q0, q1, outer + p * s * d, s, d, R);             \
    }                                                                                     \
    return 0;                                                                             \
}

/* pair_sum: out[b, c] = base[b, c] (0 when base is NULL) plus the sum over the pairs
 * (t, i) with rows[t, i] == b, by ascending expert, of sum_j v[t, i, j] *
 * W[expert[t], j, c]; output rows [b0, b1). Rows rise within each expert's run of
 * slots (pairs are sorted by expert, stably), so a binary search finds the part of every
 * run that lands in [b0, b1); each expert's s x d block is read once per call instead of
 * once per pair, and once per three rows from L1: three output rows and four subspace
 * rows at a time, the twelve weights in registers (7 loads per 12 multiply-adds; the
 * two-row loop before made 6 per 8 and summed each row's four terms as a tree). One
 * thread, k = 32, s = 4, d = 576, medians of 11 interleaved calls: 4.30 vs 5.96 ms at
 * B = 1024 and 256 experts, 4.55 vs 6.15 with 512, 23.4 vs 29.3 at B = 4096 and 2048. */
#define PAIR_SUM(NAME, SUF, REAL)                                                         \
static int NAME##_range(const REAL* v, const REAL* W, const int64_t* rows,                \
         const int64_t* start, const REAL* base, REAL* out, int64_t b0, int64_t b1,       \
         int64_t T, int64_t s, int64_t d, int64_t R, int64_t m) {                         \
    typedef v##SUF vec;                                                                   \
    const int64_t L = LANES(REAL);                                                        \
    if (base) memcpy(out + b0 * d, base + b0 * d, sizeof(REAL) * (b1 - b0) * d);          \
    else memset(out + b0 * d, 0, sizeof(REAL) * (b1 - b0) * d);                           \
    for (int64_t p = 0; p < m; ++p) {                                                     \
        int64_t lo = start[p] * T, hi = start[p + 1] * T;                                 \
        if (lo < 0 || hi < lo || hi > start[m] * T) return 1;                             \
        while (lo < hi) { /* first slot of the run whose row is >= b0 */                  \
            int64_t mid = lo + (hi - lo) / 2;                                             \
            if (rows[mid] < b0) lo = mid + 1; else hi = mid;                              \
        }                                                                                 \
        const REAL* w = W + p * s * d;                                                    \
        int64_t end = start[p + 1] * T;                                                   \
        for (int64_t q = lo; q < end;) {                                                  \
            /* up to three consecutive slots holding rows in [b0, b1) (padding, row R,    \
             * comes last in a run and ends it, as R >= b1) */                            \
            int n = 0;                                                                    \
            REAL* o[3];                                                                   \
            const REAL* vq[3];                                                            \
            for (; n < 3 && q < end; ++q) {                                               \
                if (rows[q] < 0 || rows[q] > R) return 1;                                 \
                if (rows[q] >= b1) break;                                                 \
                o[n] = out + rows[q] * d;                                                 \
                vq[n++] = v + q * s;                                                      \
            }                                                                             \
            if (n == 0) break;                                                            \
            int64_t j = 0;                                                                \
            for (; n == 3 && j + 4 <= s; j += 4) {                                        \
                const REAL *w0 = w + j * d, *w1 = w0 + d, *w2 = w1 + d, *w3 = w2 + d;     \
                const REAL *x = vq[0] + j, *y = vq[1] + j, *z = vq[2] + j;                \
                REAL x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];                          \
                REAL y0 = y[0], y1 = y[1], y2 = y[2], y3 = y[3];                          \
                REAL z0 = z[0], z1 = z[1], z2 = z[2], z3 = z[3];                          \
                REAL *ox = o[0], *oy = o[1], *oz = o[2];                                  \
                int64_t c = 0;                                                            \
                for (; c + L <= d; c += L) {                                              \
                    vec a = *(vec*)(ox + c), b = *(vec*)(oy + c), e = *(vec*)(oz + c);    \
                    vec u = *(const vec*)(w0 + c);                                        \
                    PIN(u);                                                               \
                    a += x0 * u; b += y0 * u; e += z0 * u;                                \
                    u = *(const vec*)(w1 + c);                                            \
                    PIN(u);                                                               \
                    a += x1 * u; b += y1 * u; e += z1 * u;                                \
                    u = *(const vec*)(w2 + c);                                            \
                    PIN(u);                                                               \
                    a += x2 * u; b += y2 * u; e += z2 * u;                                \
                    u = *(const vec*)(w3 + c);                                            \
                    PIN(u);                                                               \
                    a += x3 * u; b += y3 * u; e += z3 * u;                                \
                    *(vec*)(ox + c) = a; *(vec*)(oy + c) = b; *(vec*)(oz + c) = e;        \
                }                                                                         \
                for (; c < d; ++c) {                                                      \
                    ox[c] = (((ox[c] + x0 * w0[c]) + x1 * w1[c]) + x2 * w2[c])            \
                            + x3 * w3[c];                                                 \
                    oy[c] = (((oy[c] + y0 * w0[c]) + y1 * w1[c]) + y2 * w2[c])            \
                            + y3 * w3[c];                                                 \
                    oz[c] = (((oz[c] + z0 * w0[c]) + z1 * w1[c]) + z2 * w2[c])            \
                            + z3 * w3[c];                                                 \
                }                                                                         \
            }                                                                             \
            for (int i = 0; i < n; ++i) /* fewer rows, or the last s % 4 subspace rows */ \
                for (int64_t jj = n == 3 ? j : 0; jj < s; ++jj) {                         \
                    REAL vj = vq[i][jj];                                                  \
                    const REAL* wj = w + jj * d;                                          \
                    _Pragma("omp simd")                                                   \
                    for (int64_t c = 0; c < d; ++c) o[i][c] += vj * wj[c];                \
                }                                                                         \
        }                                                                                 \
    }                                                                                     \
    return 0;                                                                             \
}

/* child_fwd: each parent's tiny child SAE on the subspace vectors u (n_tiles, T, s),
 * tiles [t0, t1): pre[c] = E[p, c] . u, the best child (first largest relu(pre)),
 * act = relu(pre[best]), v = act * D[p, best]; padding slots give 0, 0, 0. The encoder
 * comes transposed and padded, Et (m, s, Cp) with Cp a multiple of the vector width and
 * zeros past C (a zero never beats relu's 0), so the children's pre-activations are
 * vectors: the same sums in the same order as E[p, c] . u, and the first child reaching
 * the largest one wins, as in a scan. One thread, B = 1024, k = 32, 256 experts, C = 16,
 * s = 4, medians of 21 interleaved calls in three runs: 0.73-1.08 ms against 1.73-3.00
 * for the scalar scan, outputs bitwise equal. */
#define CHILD_FWD(NAME, SUF, REAL, IVEC, IREAL, HMIN)                                     \
static int NAME##_range(const REAL* u, const REAL* Et, const REAL* D,                     \
         const int64_t* expert, const int64_t* rows, REAL* v, REAL* act, int64_t* arg,    \
         int64_t t0, int64_t t1, int64_t T, int64_t s, int64_t C, int64_t Cp, int64_t R,  \
         int64_t m) {                                                                     \
    typedef v##SUF vec;                                                                   \
    const int64_t L = LANES(REAL);                                                        \
    IVEC iota;                                                                            \
    for (int64_t l = 0; l < L; ++l) iota[l] = (IREAL)l;                                   \
    REAL pre[Cp];                                                                         \
    for (int64_t t = t0; t < t1; ++t) {                                                   \
        int64_t p = expert[t];                                                            \
        if (p < 0 || p >= m) return 1;                                                    \
        const REAL* e = Et + p * s * Cp;                                                  \
        for (int64_t i = 0; i < T; ++i) {                                                 \
            int64_t q = t * T + i;                                                        \
            const REAL* uu = u + q * s;                                                   \
            REAL best = 0;                                                                \
            int64_t c_best = 0;                                                           \
            if (rows[q] != R) {                                                           \
                vec top = {0};                                                            \
                for (int64_t c = 0; c < Cp; c += L) {                                     \
                    vec a = {0};                                                          \
                    for (int64_t j = 0; j < s; ++j)                                       \
                        a += *(const vec*)(e + j * Cp + c) * uu[j];                       \
                    *(vec*)(pre + c) = a;                                                 \
                    top = BLEND(vec, IVEC, a > top, a, top);                              \
                }                                                                         \
                best = hmax_##SUF(top);                                                   \
                if (best > 0) { /* the first child whose pre-activation is the largest */ \
                    IVEC first = iota + (IREAL)Cp, big = first;                           \
                    for (int64_t c = 0; c < Cp; c += L) {                                 \
                        IVEC hit = *(const vec*)(pre + c) == best;                        \
                        IVEC cand = BLEND(IVEC, IVEC, hit, iota + (IREAL)c, big);         \
                        first = BLEND(IVEC, IVEC, cand < first, cand, first);             \
                    }                                                                     \
                    c_best = HMIN(first);                                                 \
                }                                                                         \
            }                                                                             \
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
static int NAME##_range(const REAL* grad_v, const REAL* u, const REAL* E, const REAL* D,  \
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

DOT_ROWS(f32, float)
DOT_OUTER_FUSED(f32, float)
DOT_OUTER_FUSED(f64, double)
DOT_ROWS(f64, double)
OUTER_ROWS(f32, float)
OUTER_ROWS(f64, double)
PAIR_DOT(pair_dot_f32, f32, float)
PAIR_DOT(pair_dot_f64, f64, double)
EXPERT_OUTER(expert_outer_f32, f32, float)
EXPERT_OUTER(expert_outer_f64, f64, double)
DOT_OUTER(dot_outer_f32, f32, float)
DOT_OUTER(dot_outer_f64, f64, double)
PAIR_SUM(pair_sum_f32, f32, float)
PAIR_SUM(pair_sum_f64, f64, double)
CHILD_FWD(child_fwd_f32, f32, float, vi32, int32_t, hmin_i32)
CHILD_FWD(child_fwd_f64, f64, double, vi64, int64_t, hmin_i64)
CHILD_BWD(child_bwd_f32, float)
CHILD_BWD(child_bwd_f64, double)

/* The exported kernels: NAME(pointers..., bounds, parts, sizes...) runs NAME_range on
 * the ranges [bounds[i], bounds[i + 1]), i < parts, each on one thread of OpenMP's
 * team: with -fopenmp that is torch's own runtime (the library asks for the libgomp
 * already loaded), whose threads are awake after torch's last op, where a thread pool
 * of our own had to wait for the core they spin on. Routed 256x16 steps at B = 1024
 * (2 threads, default OpenMP settings, in-process A/B, medians of 25): pair_dot
 * 1.59 vs 2.92 ms, pair_sum 1.92 vs 4.98 ms, the step 35.9 vs 41.8 ms. Without OpenMP
 * the ranges run in order on the caller (native.py then hands each range to its own
 * pool). The return codes are or-ed: nonzero when any range met a bad index. */
#define UNPACK(...) __VA_ARGS__
#define RANGES(NAME, PARAMS, ARGS, SIZES, SIZE_ARGS)                                     \
int NAME(UNPACK PARAMS, const int64_t* bounds, int64_t parts, UNPACK SIZES) {             \
    int rc = 0;                                                                           \
    _Pragma("omp parallel for schedule(static) num_threads(parts) reduction(|:rc) if(parts > 1)") \
    for (int64_t i = 0; i < parts; ++i)                                                   \
        rc |= NAME##_range(UNPACK ARGS, bounds[i], bounds[i + 1], UNPACK SIZE_ARGS);      \
    return rc;                                                                            \
}
#define EXPORT(SUF, REAL)                                                                 \
RANGES(pair_dot_##SUF, (const REAL* table, const REAL* W, const int64_t* rows,            \
                        const int64_t* expert, REAL* out), (table, W, rows, expert, out), \
       (int64_t T, int64_t s, int64_t d, int64_t R, int64_t m), (T, s, d, R, m))          \
RANGES(expert_outer_##SUF, (const REAL* g, const REAL* table, const int64_t* rows,        \
                            const int64_t* start, REAL* out), (g, table, rows, start, out), \
       (int64_t T, int64_t s, int64_t d, int64_t R, int64_t n), (T, s, d, R, n))          \
RANGES(dot_outer_##SUF, (const REAL* g, const REAL* table, const REAL* W,                 \
                         const int64_t* rows, const int64_t* start, REAL* dot, REAL* outer), \
       (g, table, W, rows, start, dot, outer),                                            \
       (int64_t T, int64_t s, int64_t d, int64_t R, int64_t n), (T, s, d, R, n))          \
RANGES(pair_sum_##SUF, (const REAL* v, const REAL* W, const int64_t* rows,                \
                        const int64_t* start, const REAL* base, REAL* out),               \
       (v, W, rows, start, base, out),                                                    \
       (int64_t T, int64_t s, int64_t d, int64_t R, int64_t m), (T, s, d, R, m))          \
RANGES(child_fwd_##SUF, (const REAL* u, const REAL* Et, const REAL* D,                    \
                         const int64_t* expert, const int64_t* rows, REAL* v, REAL* act,  \
                         int64_t* arg), (u, Et, D, expert, rows, v, act, arg),            \
       (int64_t T, int64_t s, int64_t C, int64_t Cp, int64_t R, int64_t m),               \
       (T, s, C, Cp, R, m))                                                               \
RANGES(child_bwd_##SUF, (const REAL* grad_v, const REAL* u, const REAL* E, const REAL* D, \
                         const REAL* act, const int64_t* arg, const int64_t* rows,        \
                         const int64_t* start, REAL* grad_u, REAL* grad_E, REAL* grad_D), \
       (grad_v, u, E, D, act, arg, rows, start, grad_u, grad_E, grad_D),                  \
       (int64_t T, int64_t s, int64_t C, int64_t R, int64_t n), (T, s, C, R, n))
EXPORT(f32, float)
EXPORT(f64, double)

/* Whether this build runs ranges on OpenMP threads (built with -fopenmp), and the
 * thread count its runtime would use (native.py compares it with torch's). */
int kernels_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int kernels_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

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
