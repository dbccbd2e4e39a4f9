/* Per-sample patch Gram matrices of |x|: the "patch form" of NNrelief's conv scores (relief_nb/scores.py); and
 * batch sums and maxima of |x| for Linear layers and residual maps (end of file).
 *
 * For every sample n and input channel c, with P_nc the patches of |x_nc| (kh*kw rows, one column per output
 * position of the layer's window), writes the upper triangle of G_nc = P_nc P_nc^T,
 *
 *     gram[c, p, n] = sum_positions P_nc[a, pos] * P_nc[b, pos],   p: the p-th pair a <= b, row-major
 *
 * (the order of torch.triu_indices), and cmax[n, c] = max |x_nc|, NaN if x_nc holds NaN or inf.
 *
 * Entry (a, b) pairs kernel offsets a = (ar, ac) and b = (ar + dr, ac + dc): it is a sum of x[u][v] x[u+p][v+q]
 * over the input pixels (u, v) that offset a visits, with the lag (p, q) = (dr * dil_h, dc * dil_w). So for each
 * lag the products are formed once per pixel and summed over the row window of each ar into column sums, which
 * are then summed over the column window of each ac: about 13 products per pixel for a 3x3 kernel instead of 45
 * (one per pair). With stride 1 the row windows of all ar share a core of rows, summed once. Zero padding
 * contributes nothing, so windows are clipped to the image instead.
 *
 * Layout: each sample of x is dense, channels-last (sc == 1: every image row is one run of W*C floats, all
 * channels computed together in SIMD lanes) or NCHW (each channel's rows are runs of W floats); sn is the sample
 * stride. relief_nb/native.py passes anything else as a contiguous copy.
 * Returns 0, or 1 if memory ran out.
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* acc[t] += sum_r a[r * step + t] * b[r * step + t] over `rows` rows: lag products added to column sums, four
 * rows per sweep so that acc is loaded and stored once per four products */
static void add_products(float *restrict acc, const float *a, const float *b, int64_t step, int64_t rows,
                         int64_t len) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4, a += 4 * step, b += 4 * step) {
        const float *a1 = a + step, *a2 = a + 2 * step, *a3 = a + 3 * step;
        const float *b1 = b + step, *b2 = b + 2 * step, *b3 = b + 3 * step;
#pragma omp simd
        for (int64_t t = 0; t < len; ++t) acc[t] += a[t] * b[t] + a1[t] * b1[t] + a2[t] * b2[t] + a3[t] * b3[t];
    }
    for (; r < rows; ++r, a += step, b += step) {
#pragma omp simd
        for (int64_t t = 0; t < len; ++t) acc[t] += a[t] * b[t];
    }
}

/* The input rows (or columns) that kernel offset k visits over the `out` output positions, inside [0, limit):
 * `count` of them, the first at `first`, `stride` apart. */
static inline void window(int64_t k, int64_t dil, int64_t pad, int64_t stride, int64_t out, int64_t limit,
                          int64_t *first, int64_t *count) {
    const int64_t start = k * dil - pad;
    const int64_t i0 = start < 0 ? (-start + stride - 1) / stride : 0; /* skip positions in the zero padding */
    const int64_t i1 = limit - 1 - start < 0 ? 0 : min64(out, (limit - 1 - start) / stride + 1);
    *first = start + i0 * stride;
    *count = max64(0, i1 - i0);
}

static int grams(const float *x, int64_t n0, int64_t n1, int64_t N, int64_t C, int64_t H, int64_t W,
                 int64_t sn, int64_t sc, int64_t kh, int64_t kw, int64_t stride_h,
                 int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t Ho,
                 int64_t Wo, float *gram, float *cmax) {
    const int64_t in_pixel = C > 1 && sc == 1 ? C : 1; /* stride of pixels in the input: C if channels-last */
    const int lanes = C >= 8;                          /* buffer channels-last, channels in SIMD lanes */
    const int64_t E = lanes ? C : 1;                   /* floats per pixel within a row run of the buffer */
    const int64_t G = lanes ? 1 : C;                   /* row runs per image row */
    const int64_t row = W * E, plane = H * row, kk = kh * kw, pairs = kk * (kk + 1) / 2;
    float *image = malloc((size_t)(G * plane) * sizeof(float)); /* |x_n| */
    float *acc = malloc((size_t)((kh + 1) * row) * sizeof(float)); /* core, then one column sum per ar */
    float *lane = malloc((size_t)E * sizeof(float));
    float *sum = malloc((size_t)C * sizeof(float));
    if (!image || !acc || !lane || !sum) {
        free(image), free(acc), free(lane), free(sum);
        return 1;
    }
    for (int64_t n = n0; n < n1; ++n) {
        const float *xn = x + n * sn;
        float *mx = cmax + n * C;
        for (int64_t c = 0; c < C; ++c) mx[c] = 0.f, sum[c] = 0.f;
        /* |x_n| into the buffer, transposed if the layouts differ; channel maxima and sums on the way */
        if (lanes && in_pixel == C) {
            for (int64_t t = 0; t < H * W; ++t) {
                const float *src = xn + t * C;
                float *dst = image + t * C;
#pragma omp simd
                for (int64_t c = 0; c < C; ++c) {
                    const float v = fabsf(src[c]);
                    dst[c] = v;
                    mx[c] = v > mx[c] ? v : mx[c];
                    sum[c] += v;
                }
            }
        } else if (lanes || in_pixel == 1) {
            for (int64_t c = 0; c < C; ++c) {
                const float *src = xn + c * sc;
                float *dst = lanes ? image + c : image + c * plane;
                const int64_t step = lanes ? C : 1;
                float m = 0.f, s = 0.f;
#pragma omp simd reduction(max : m) reduction(+ : s)
                for (int64_t t = 0; t < H * W; ++t) {
                    const float v = fabsf(src[t]);
                    dst[t * step] = v;
                    m = v > m ? v : m;
                    s += v;
                }
                mx[c] = m, sum[c] = s;
            }
        } else { /* channels-last input with few channels: one plane per channel */
            for (int64_t t = 0; t < H * W; ++t)
                for (int64_t c = 0; c < C; ++c) {
                    const float v = fabsf(xn[t * C + c]);
                    image[c * plane + t] = v;
                    mx[c] = v > mx[c] ? v : mx[c];
                    sum[c] += v;
                }
        }
        for (int64_t c = 0; c < C; ++c)
            if (!isfinite(sum[c])) mx[c] = NAN; /* a NaN or inf anywhere makes the sum non-finite */

        for (int64_t g = 0; g < G; ++g) {
            const float *img = image + g * plane;
            for (int64_t dr = 0; dr < kh; ++dr)
                for (int64_t dc = dr ? 1 - kw : 0; dc < kw; ++dc) {
                    const int64_t p = dr * dil_h, q = dc * dil_w, R = kh - dr; /* ar in [0, R) */
                    const int64_t ac0 = dc < 0 ? -dc : 0, ac1 = dc > 0 ? kw - dc : kw; /* ac in [ac0, ac1) */
                    /* columns v that some ac visits, with v + q inside the image too */
                    int64_t v0 = W, v1 = 0;
                    for (int64_t ac = ac0; ac < ac1; ++ac) {
                        int64_t first, count;
                        window(ac, dil_w, pad_w, stride_w, Wo, W, &first, &count);
                        if (count) v0 = min64(v0, first), v1 = max64(v1, first + (count - 1) * stride_w + 1);
                    }
                    v0 = max64(v0, -q), v1 = min64(v1, W - q);
                    if (v1 < v0) v1 = v0; /* no column: the pairs of this lag get 0 */
                    const int64_t len = (v1 - v0) * E;
                    /* with stride 1 each ar visits a run of rows; the rows all of them visit (the core) are summed
                     * once: [first row of the last ar, end of the first ar's run) */
                    int64_t core0 = 0, core1 = 0;
                    if (stride_h == 1) {
                        int64_t f_last, c_last, f_first, c_first;
                        window(R - 1, dil_h, pad_h, 1, Ho, H - p, &f_last, &c_last);
                        window(0, dil_h, pad_h, 1, Ho, H - p, &f_first, &c_first);
                        if (c_last && c_first) core0 = f_last, core1 = max64(f_last, f_first + c_first);
                    }
                    float *core = acc + kh * row;
                    memset(core, 0, (size_t)len * sizeof(float));
                    const float *pa = img + v0 * E, *pb = img + p * row + (v0 + q) * E; /* row 0 of a and b */
                    add_products(core, pa + core0 * row, pb + core0 * row, row, core1 - core0, len);
                    for (int64_t ar = 0; ar < R; ++ar) {
                        float *cs = acc + ar * row;
                        memcpy(cs, core, (size_t)len * sizeof(float));
                        int64_t u, count;
                        window(ar, dil_h, pad_h, stride_h, Ho, H - p, &u, &count);
                        if (core1 > core0) { /* stride 1: the rows before and after the core */
                            add_products(cs, pa + u * row, pb + u * row, row, core0 - u, len);
                            add_products(cs, pa + core1 * row, pb + core1 * row, row, u + count - core1, len);
                        } else {
                            add_products(cs, pa + u * row, pb + u * row, stride_h * row, count, len);
                        }
                        for (int64_t ac = ac0; ac < ac1; ++ac) {
                            int64_t v, vcount;
                            window(ac, dil_w, pad_w, stride_w, Wo, W, &v, &vcount);
                            for (int64_t e = 0; e < E; ++e) lane[e] = 0.f;
                            if (v < v0) { /* skip columns whose partner v + q is outside the image */
                                const int64_t skip = (v0 - v + stride_w - 1) / stride_w;
                                v += skip * stride_w, vcount -= skip;
                            }
                            if (v >= v1) vcount = 0;
                            else if (vcount > 0 && v + (vcount - 1) * stride_w >= v1) vcount = (v1 - 1 - v) / stride_w + 1;
                            if (E == 1) {
                                float total = 0.f;
                                const float *col = cs + (v - v0);
#pragma omp simd reduction(+ : total)
                                for (int64_t j = 0; j < vcount; ++j) total += col[j * stride_w];
                                lane[0] = total;
                            } else {
                                for (int64_t j = 0; j < vcount; ++j) {
                                    const float *col = cs + (v - v0 + j * stride_w) * E;
#pragma omp simd
                                    for (int64_t e = 0; e < E; ++e) lane[e] += col[e];
                                }
                            }
                            const int64_t a = ar * kw + ac, b = (ar + dr) * kw + ac + dc;
                            const int64_t pair = a * kk - a * (a - 1) / 2 + (b - a);
                            for (int64_t e = 0; e < E; ++e) gram[((g * E + e) * pairs + pair) * N + n] = lane[e];
                        }
                    }
                }
        }
    }
    free(image), free(acc), free(lane), free(sum);
    return 0;
}

/* The batch split over OpenMP threads. Loaded into a torch process, the library shares torch's own OpenMP runtime
 * (libgomp.so.1, loaded first), so the kernel runs on torch's worker threads, as many as torch.get_num_threads(). */
int relief_patch_grams(const float *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sn, int64_t sc, int64_t kh,
                       int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                       int64_t dil_w, int64_t Ho, int64_t Wo, float *gram, float *cmax) {
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        int64_t part = 0, parts = 1;
#ifdef _OPENMP
        part = omp_get_thread_num(), parts = omp_get_num_threads();
#endif
        failed |= grams(x, N * part / parts, N * (part + 1) / parts, N, C, H, W, sn, sc, kh, kw, stride_h, stride_w,
                        pad_h, pad_w, dil_h, dil_w, Ho, Wo, gram, cmax);
    }
    return failed;
}

/* sum[t] = sum_n |x[n * sn + t]| and max[t] = max_n |x[n * sn + t]| (NaN where a NaN or inf occurs) for t < inner:
 * batch statistics of |x| for samples stored as dense runs of `inner` floats (a Linear layer's inputs, ResNet
 * residual maps), in one pass over x and without a temporary |x|. */
void relief_batch_abs_stats(const float *x, int64_t N, int64_t inner, int64_t sn, float *sum, float *max) {
    const int64_t block = 2048; /* columns per task: their partial results stay in L1 while the batch streams by */
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < inner; b += block) {
        const int64_t len = min64(block, inner - b);
        float *s = sum + b, *m = max + b;
        for (int64_t t = 0; t < len; ++t) s[t] = 0.f, m[t] = 0.f;
        for (int64_t n = 0; n < N; ++n) {
            const float *xn = x + n * sn + b;
#pragma omp simd
            for (int64_t t = 0; t < len; ++t) {
                const float v = fabsf(xn[t]);
                s[t] += v;
                m[t] = v > m[t] ? v : m[t];
            }
        }
        for (int64_t t = 0; t < len; ++t)
            if (!isfinite(s[t])) m[t] = NAN;
    }
}
