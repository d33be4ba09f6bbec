/* Fused ReLU -> BatchNorm (training statistics) -> 2x2 max-pool passes of the ConvDiffusionModel, channels-last.
 *
 * Compiled once per machine by fused_kernels.py (cc -O3 -march=native -fopenmp, no Python or torch headers) and
 * called through ctypes. Its libgomp.so.1 is the one torch has already loaded (same soname), so the loops below run
 * on torch's intra-op threads and follow torch.set_num_threads(). Every tensor is a [rows, C] matrix (C contiguous)
 * of float32 or bfloat16 (stored as uint16); the per-channel vectors (scale, shift, ...) are float32, the sums
 * float64, added up per thread and then in thread order (the same bits every run for a given thread count).
 *
 * The passes, against PyTorch's (ReLU, BatchNorm, MaxPool2d, each forward and backward on its own):
 *   relu_stats   reads the conv output once: writes ReLU(x) and adds up its shifted sum and sum of squares.
 *   pool_affine  reads ReLU(x) once: the 2x2 max (min for a negative scale) and its BatchNorm, at a quarter of the
 *                size. An increasing affine map (and bf16 rounding) commutes with max, so this is max-pool(BN(.)).
 *   affine       the decoder's BatchNorm of ReLU(x) (no pooling).
 *   dot_sums     sum(g) and sum(g * (v - center)): the backward's per-channel reductions.
 *   pool_backward / affine_backward
 *                one pass that writes the gradient of the conv output: the max-pool's routing (the same element
 *                as PyTorch picks: the first maximum, NaN wins), BatchNorm's batch-statistics terms, ReLU's mask.
 */
#ifndef KERNEL_BODY /* this file includes itself once per element type, below */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t bf16;

static inline float bf16_load(bf16 v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, NaN kept quiet: c10::BFloat16's conversion. */
static inline bf16 bf16_store(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = (u >> 16) | 0x40u;
    return (bf16)(((u & 0x7fffffffu) > 0x7f800000u) ? nan : rounded);
}

static inline float f32_load(float v) { return v; }
static inline float f32_store(float f) { return f; }

/* The 2x2 window's value that max-pool(BatchNorm(.)) keeps: its max for a scale s >= 0, else its min (the affine
 * map reverses the order), by PyTorch's rule: the first extreme, a NaN wins. */
static inline float window_extreme(float v0, float v1, float v2, float v3, float s) {
    float hi = v0, lo = v0;
    hi = (v1 > hi || v1 != v1) ? v1 : hi;
    hi = (v2 > hi || v2 != v2) ? v2 : hi;
    hi = (v3 > hi || v3 != v3) ? v3 : hi;
    lo = (v1 < lo || v1 != v1) ? v1 : lo;
    lo = (v2 < lo || v2 != v2) ? v2 : lo;
    lo = (v3 < lo || v3 != v3) ? v3 : lo;
    return s >= 0.0f ? hi : lo;
}

/* Block of rows summed in float before it is added to the float64 totals. */
#define STATS_BLOCK 16

#define KERNEL_BODY
#define T bf16
#define NAME(f) f##_bf16
#define LOAD bf16_load
#define STORE bf16_store
#include "fused_bn.c"
#undef T
#undef NAME
#undef LOAD
#undef STORE
#define T float
#define NAME(f) f##_f32
#define LOAD f32_load
#define STORE f32_store
#include "fused_bn.c"

#else /* KERNEL_BODY: the kernels, once per element type T */

/* sum[c] += sum over rows of f0, sumsq[c] += sum of f1: STATS_BLOCK rows in float, then float64 per thread, then
 * the threads' totals in thread order. BODY(r, c, acc0, acc1) adds row r's channel c into the float accumulators. */
#ifndef REDUCE_ROWS
#define REDUCE_ROWS(rows, C, out0, out1, BODY)                                                                     \
    do {                                                                                                           \
        int nt = omp_get_max_threads();                                                                            \
        double *part = calloc((size_t)nt * 2 * (size_t)C, sizeof(double));                                         \
        int64_t nblocks = (rows + STATS_BLOCK - 1) / STATS_BLOCK;                                                  \
        _Pragma("omp parallel num_threads(nt)") {                                                                  \
            int t = omp_get_thread_num();                                                                          \
            double *p0 = part + (size_t)t * 2 * (size_t)C, *p1 = p0 + C;                                           \
            float *b0 = calloc((size_t)C, sizeof(float)), *b1 = calloc((size_t)C, sizeof(float));                  \
            _Pragma("omp for schedule(static)") for (int64_t blk = 0; blk < nblocks; ++blk) {                      \
                int64_t r0 = blk * STATS_BLOCK, r1 = r0 + STATS_BLOCK < rows ? r0 + STATS_BLOCK : rows;            \
                for (int64_t r = r0; r < r1; ++r)                                                                  \
                    for (int64_t c = 0; c < C; ++c) { BODY(r, c, b0[c], b1[c]); }                                  \
                for (int64_t c = 0; c < C; ++c) {                                                                  \
                    p0[c] += b0[c];                                                                                \
                    p1[c] += b1[c];                                                                                \
                    b0[c] = 0.0f;                                                                                  \
                    b1[c] = 0.0f;                                                                                  \
                }                                                                                                  \
            }                                                                                                      \
            free(b0);                                                                                              \
            free(b1);                                                                                              \
        }                                                                                                          \
        for (int t = 0; t < nt; ++t)                                                                               \
            for (int64_t c = 0; c < C; ++c) {                                                                      \
                out0[c] += part[(size_t)t * 2 * (size_t)C + c];                                                    \
                out1[c] += part[(size_t)t * 2 * (size_t)C + C + c];                                                \
            }                                                                                                      \
        free(part);                                                                                                \
    } while (0)
#endif

/* out = ReLU(x) (NaN stays NaN); sum, sumsq: of (out - origin) per channel. */
void NAME(relu_stats)(const T *restrict x, T *restrict out, int64_t rows, int64_t C, const float *restrict origin,
                      double *restrict sum, double *restrict sumsq) {
#define RELU_STATS(r, c, s0, s1)                          \
    float v = LOAD(x[(r) * C + (c)]);                     \
    v = (v > 0.0f || v != v) ? v : 0.0f;                  \
    out[(r) * C + (c)] = STORE(v);                        \
    float d = v - origin[c];                              \
    s0 += d;                                              \
    s1 += d * d;
    REDUCE_ROWS(rows, C, sum, sumsq, RELU_STATS);
#undef RELU_STATS
}

/* sum_g += g, sum_gv += g * (v - center) per channel. */
void NAME(dot_sums)(const T *restrict g, const T *restrict v, int64_t rows, int64_t C, const float *restrict center,
                    double *restrict sum_g, double *restrict sum_gv) {
#define DOT_SUMS(r, c, s0, s1)                            \
    float gg = LOAD(g[(r) * C + (c)]);                    \
    s0 += gg;                                             \
    s1 += gg * (LOAD(v[(r) * C + (c)]) - center[c]);
    REDUCE_ROWS(rows, C, sum_g, sum_gv, DOT_SUMS);
#undef DOT_SUMS
}

/* One output pixel of pool_affine: the 2x2 window's rows r0..r3 (each C values). Inner loops live in functions of
 * their own, with restrict arguments, so the compiler vectorizes them inside OpenMP's outlined loops too. */
static void NAME(pool_affine_pixel)(const T *restrict r0, const T *restrict r1, const T *restrict r2,
                                    const T *restrict r3, int64_t C, const float *restrict scale,
                                    const float *restrict shift, T *restrict pooled, T *restrict out) {
    for (int64_t c = 0; c < C; ++c) {
        float v0 = LOAD(r0[c]), v1 = LOAD(r1[c]), v2 = LOAD(r2[c]), v3 = LOAD(r3[c]);
        float s = scale[c], m = window_extreme(v0, v1, v2, v3, s);
        pooled[c] = STORE(m);
        out[c] = STORE(m * s + shift[c]);
    }
}

/* x: [N, H, W, C]; pooled rows [orow0, orow1) of the N * H/2; pooled (the max, or min), out: [N, H/2, W/2, C]. */
void NAME(pool_affine)(const T *x, int64_t H, int64_t W, int64_t C, int64_t orow0, int64_t orow1,
                       const float *scale, const float *shift, T *pooled, T *out) {
    int64_t OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static)
    for (int64_t orow = orow0; orow < orow1; ++orow) {
        int64_t n = orow / OH, oh = orow % OH;
        for (int64_t ow = 0; ow < OW; ++ow) {
            const T *p = x + (((n * H + 2 * oh) * W) + 2 * ow) * C;
            int64_t o = ((orow * OW) + ow) * C;
            NAME(pool_affine_pixel)(p, p + C, p + W * C, p + W * C + C, C, scale, shift, pooled + o, out + o);
        }
    }
}

void NAME(affine)(const T *restrict x, T *restrict out, int64_t rows, int64_t C, const float *restrict scale,
                  const float *restrict shift) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < C; ++c) out[r * C + c] = STORE(LOAD(x[r * C + c]) * scale[c] + shift[c]);
}

/* One output pixel of pool_backward: the window's rows r0..r3 of x, g's row, the window's rows q0..q3 of grad_x. */
static void NAME(pool_backward_pixel)(const T *restrict r0, const T *restrict r1, const T *restrict r2,
                                      const T *restrict r3, const T *restrict g, int64_t C,
                                      const float *restrict scale, const float *restrict a, const float *restrict b,
                                      const float *restrict mean, T *restrict q0, T *restrict q1, T *restrict q2,
                                      T *restrict q3) {
    for (int64_t c = 0; c < C; ++c) {
        float v0 = LOAD(r0[c]), v1 = LOAD(r1[c]), v2 = LOAD(r2[c]), v3 = LOAD(r3[c]);
        float s = scale[c], m = window_extreme(v0, v1, v2, v3, s); /* what the forward pooled */
        float direct = LOAD(g[c]) * s, ac = a[c], bc = b[c], mc = mean[c];
        /* The pool's gradient goes to the first element equal to that extreme, the one PyTorch's max-pool picks (a
         * NaN makes every gradient of the batch NaN anyway, through the statistics). k is a float so that every
         * select here is float-on-float: gcc 12 vectorizes that, and not a chain of boolean masks. */
        float k = 3.0f;
        k = v2 == m ? 2.0f : k;
        k = v1 == m ? 1.0f : k;
        k = v0 == m ? 0.0f : k;
        float d0 = ac + bc * (v0 - mc) + (k == 0.0f ? direct : 0.0f);
        float d1 = ac + bc * (v1 - mc) + (k == 1.0f ? direct : 0.0f);
        float d2 = ac + bc * (v2 - mc) + (k == 2.0f ? direct : 0.0f);
        float d3 = ac + bc * (v3 - mc) + (k == 3.0f ? direct : 0.0f);
        q0[c] = STORE(v0 <= 0.0f ? 0.0f : d0); /* ReLU's backward: PyTorch's threshold_backward */
        q1[c] = STORE(v1 <= 0.0f ? 0.0f : d1);
        q2[c] = STORE(v2 <= 0.0f ? 0.0f : d2);
        q3[c] = STORE(v3 <= 0.0f ? 0.0f : d3);
    }
}

/* grad_x = ReLU'(x) * (direct + a + b * (x - mean)), direct = g * scale on the element the pool picked. */
void NAME(pool_backward)(const T *x, const T *g, int64_t H, int64_t W, int64_t C, int64_t orow0, int64_t orow1,
                         const float *scale, const float *a, const float *b, const float *mean, T *grad_x) {
    int64_t OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static)
    for (int64_t orow = orow0; orow < orow1; ++orow) {
        int64_t n = orow / OH, oh = orow % OH;
        for (int64_t ow = 0; ow < OW; ++ow) {
            int64_t i = (((n * H + 2 * oh) * W) + 2 * ow) * C, w = W * C;
            NAME(pool_backward_pixel)(x + i, x + i + C, x + i + w, x + i + w + C, g + ((orow * OW) + ow) * C, C,
                                      scale, a, b, mean, grad_x + i, grad_x + i + C, grad_x + i + w,
                                      grad_x + i + w + C);
        }
    }
}

void NAME(affine_backward)(const T *restrict x, const T *restrict g, int64_t rows, int64_t C,
                           const float *restrict scale, const float *restrict a, const float *restrict b,
                           const float *restrict mean, T *restrict grad_x) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < C; ++c) {
            float v = LOAD(x[r * C + c]);
            float d = LOAD(g[r * C + c]) * scale[c] + a[c] + b[c] * (v - mean[c]);
            grad_x[r * C + c] = STORE(v <= 0.0f ? 0.0f : d);
        }
}

#endif /* KERNEL_BODY */
