/* One GRU time step's element-wise work in one pass per row, for primus's CPU GRU paths
 * (primus_core/native.py compiles this file on first use and calls it via ctypes).
 *
 * torch runs the same step as 5 (forward) to 13 (backward) separate operators, each a pass over
 * the step's tensors; here each row's gates are computed in one pass, while the row is in
 * cache, and bfloat16 operands are read and written without separate casts.
 *
 * Gates follow torch.nn.GRU (r, z, n order), with gi = W_ih x + b_ih + (b_hr, b_hz, 0) and
 * gh = W_hh h (+ b_hn where the product added it):
 *   r = sigmoid(gi_r + gh_r),  z = sigmoid(gi_z + gh_z)
 *   n = tanh(gi_n + r * (gh_n + b_hn)),  h' = n + z (h - n)
 * All arithmetic is float32; bfloat16 operands are widened on load, rounded to nearest even
 * on store. */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

static inline float from_bf16(bf16 v)
{
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline bf16 to_bf16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u); /* round to nearest even (states are finite) */
    return (bf16)(bits >> 16);
}

static inline int is_nan(float f) /* by its bits: -ffast-math assumes no NaN in comparisons */
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return (bits & 0x7FFFFFFFu) > 0x7F800000u;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Widens a row of n bfloat16 values into float32 (or copies n float32 values). */
static void load_row(long n, const float *f32, const bf16 *half, float *restrict out)
{
    if (half)
        for (long j = 0; j < n; j++)
            out[j] = from_bf16(half[j]);
    else
        memcpy(out, f32, n * sizeof *out);
}

/* One row's step in one pass over float32 operands read where they lie: the new state and,
 * where rz and hn are given (both or neither), r and z and hn = gh_n + b_hn for backward.
 * Copying the row into local arrays first, and saving through them, took 1.4-1.8x as long
 * (2.9-4.5 against 2.0-3.0 ns per unit on one core, 64-256 rows). */
static void forward_row(
    long hidden, const float *restrict g, const float *restrict q, const float *restrict b_hn,
    const float *restrict h, float *restrict out, float *restrict rz, float *restrict hn)
{
    if (rz && hn) {
        for (long j = 0; j < hidden; j++) {
            const float r = sigmoid(g[j] + q[j]);
            const float z = sigmoid(g[hidden + j] + q[hidden + j]);
            const float a = q[2 * hidden + j] + b_hn[j];
            const float c = tanhf(g[2 * hidden + j] + r * a);
            out[j] = c + z * (h[j] - c);
            rz[j] = r;
            rz[hidden + j] = z;
            hn[j] = a;
        }
        return;
    }
    for (long j = 0; j < hidden; j++) {
        const float r = sigmoid(g[j] + q[j]);
        const float z = sigmoid(g[hidden + j] + q[hidden + j]);
        const float c = tanhf(g[2 * hidden + j] + r * (q[2 * hidden + j] + b_hn[j]));
        out[j] = c + z * (h[j] - c);
    }
}

/* The same with bfloat16 products (gi16, gh16), widened as they are read; the new state is
 * written in float32 and, if h_next16 is not NULL, in bfloat16 too (the next product's input). */
static void forward_row16(
    long hidden, const bf16 *restrict g, const bf16 *restrict q, const float *restrict b_hn,
    const float *restrict h, float *restrict out, bf16 *restrict out16)
{
    for (long j = 0; j < hidden; j++) {
        const float r = sigmoid(from_bf16(g[j]) + from_bf16(q[j]));
        const float z = sigmoid(from_bf16(g[hidden + j]) + from_bf16(q[hidden + j]));
        const float a = from_bf16(q[2 * hidden + j]) + b_hn[j];
        const float c = tanhf(from_bf16(g[2 * hidden + j]) + r * a);
        out[j] = c + z * (h[j] - c);
    }
    if (out16)
        for (long j = 0; j < hidden; j++)
            out16[j] = to_bf16(out[j]);
}

/* Any other mix of float32 and bfloat16 operands, or with n kept: the row copied into float32
 * first. */
static void forward_row_mixed(
    long hidden, const float *gi, const bf16 *gi16, const float *gh, const bf16 *gh16,
    const float *b_hn, const float *hi, float *out, bf16 *out16, float *rz, float *n, float *hn)
{
    const long width = 3 * hidden;
    float g[width], q[width], out_n[hidden];
    load_row(width, gi, gi16, g);
    load_row(width, gh, gh16, q);
    for (long j = 0; j < hidden; j++)
        q[2 * hidden + j] += b_hn[j];
    for (long j = 0; j < hidden; j++) {
        const float r = sigmoid(g[j] + q[j]);
        const float z = sigmoid(g[hidden + j] + q[hidden + j]);
        const float c = tanhf(g[2 * hidden + j] + r * q[2 * hidden + j]);
        out[j] = c + z * (hi[j] - c);
        out_n[j] = c;
        if (rz) {
            rz[j] = r;
            rz[hidden + j] = z;
        }
    }
    if (out16)
        for (long j = 0; j < hidden; j++)
            out16[j] = to_bf16(out[j]);
    if (n)
        memcpy(n, out_n, sizeof out_n);
    if (hn)
        memcpy(hn, q + 2 * hidden, sizeof out_n);
}

/* Forward step for `rows` rows of `hidden` units; every array is a contiguous row-major
 * matrix and the float32 or the bfloat16 one of each pair is given, the other NULL.
 *   gi / gi16 (rows, 3 hidden): the input projection with its biases and (b_hr, b_hz, 0);
 *   gh / gh16 (rows, 3 hidden): the recurrent product; b_hn (hidden) or NULL, added to its
 *     n part;
 *   h (rows, hidden): the state before the step; h_next (rows, hidden) the state after, and
 *     h_next16, if not NULL, the same in bfloat16 (the next bfloat16 product's input);
 *   rz (rows, 2 hidden), n and hn (rows, hidden), each if not NULL: r and z, n, and
 *     gh_n + b_hn (the training GRU keeps r, z and hn for the backward step). */
void primus_gru_forward_step(
    long rows, long hidden, const float *gi, const bf16 *gi16, const float *gh, const bf16 *gh16,
    const float *b_hn, const float *h, float *h_next, bf16 *h_next16, float *rz, float *n,
    float *hn, int threads)
{
    const long width = 3 * hidden;
#pragma omp parallel num_threads(threads)
    {
        float zeros[b_hn ? 1 : hidden]; /* b_hn's stand-in where the product added it */
        if (!b_hn)
            memset(zeros, 0, sizeof zeros);
        const float *bias = b_hn ? b_hn : zeros;
#pragma omp for schedule(static)
        for (long i = 0; i < rows; i++) {
            const float *hi = h + i * hidden;
            float *out = h_next + i * hidden;
            bf16 *out16 = h_next16 ? h_next16 + i * hidden : NULL;
            float *rz_i = rz ? rz + i * 2 * hidden : NULL, *hn_i = hn ? hn + i * hidden : NULL;
            if (gi && gh && !h_next16 && !n && !rz == !hn)
                forward_row(hidden, gi + i * width, gh + i * width, bias, hi, out, rz_i, hn_i);
            else if (gi16 && gh16 && !rz && !n && !hn)
                forward_row16(hidden, gi16 + i * width, gh16 + i * width, bias, hi, out, out16);
            else
                forward_row_mixed(
                    hidden, gi ? gi + i * width : NULL, gi16 ? gi16 + i * width : NULL,
                    gh ? gh + i * width : NULL, gh16 ? gh16 + i * width : NULL, bias, hi, out,
                    out16, rz_i, n ? n + i * hidden : NULL, hn_i);
        }
    }
}

/* One row of the backward step (see primus_gru_backward_step). */
static void backward_row(
    long hidden, float *restrict d, const float *restrict through, const float *restrict go,
    const float *restrict r, const float *restrict z, float *restrict gi_n_dn,
    const float *restrict hn, const float *restrict h, float *restrict g)
{
    if (through)
        for (long j = 0; j < hidden; j++)
            d[j] += through[j];
    if (go)
        for (long j = 0; j < hidden; j++)
            d[j] += go[j];
    for (long j = 0; j < hidden; j++) {
        const float n = tanhf(gi_n_dn[j] + r[j] * hn[j]); /* as the forward step computed it */
        const float dpre_n = d[j] * (1.0f - z[j]) * (1.0f - n * n);
        gi_n_dn[j] = dpre_n;
        g[j] = dpre_n * hn[j] * r[j] * (1.0f - r[j]);
        g[hidden + j] = d[j] * (h[j] - n) * z[j] * (1.0f - z[j]);
        g[2 * hidden + j] = dpre_n * r[j];
        d[j] *= z[j];
    }
}

/* Backward step for `rows` rows of `hidden` units, from what the forward step kept (r, z and
 * hn) and the input projection's n part, gi_n_dn (rows, hidden), from which n is computed
 * again (one tanh per unit instead of keeping n: 34 MB at batch 512).
 *   dh (rows, hidden): the state's gradient after the step, or the part of it that bypassed
 *     the last product (d * z); through (rows, hidden) or NULL: the product's part (g W_hh),
 *     added to it; grad_out (rows, hidden) or NULL, the output's gradient at this step, added
 *     too. On return dh holds dh * z, the part of the previous state's gradient that bypasses
 *     the product with W_hh.
 *   g (rows, 3 hidden): the gradients of (gi_r + gh_r, gi_z + gh_z, gh_n + b_hn);
 *   gi_n_dn on return: the gradient of gi_n + r * hn, n's pre-activation, in place of
 *     gi_n (one buffer for both). */
void primus_gru_backward_step(
    long rows, long hidden, float *dh, const float *through, const float *grad_out,
    const float *rz, float *gi_n_dn, const float *hn, const float *h, float *g, int threads)
{
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < rows; i++) {
        const float *r = rz + i * 2 * hidden;
        backward_row(
            hidden, dh + i * hidden, through ? through + i * hidden : NULL,
            grad_out ? grad_out + i * hidden : NULL, r, r + hidden, gi_n_dn + i * hidden,
            hn + i * hidden, h + i * hidden, g + i * 3 * hidden);
    }
}

/* dst (cols, rows) = the transpose of src (rows, cols), by tiles of TILE x TILE so that both
 * sides are read and written a cache line at a time (torch's strided copy: ~5x slower here). */
enum { TILE = 32 };

void primus_transpose(long rows, long cols, const float *src, float *dst, int threads)
{
    const long row_tiles = (rows + TILE - 1) / TILE, col_tiles = (cols + TILE - 1) / TILE;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long tile = 0; tile < row_tiles * col_tiles; tile++) {
        const long r0 = tile / col_tiles * TILE, c0 = tile % col_tiles * TILE;
        const long r1 = r0 + TILE < rows ? r0 + TILE : rows;
        const long c1 = c0 + TILE < cols ? c0 + TILE : cols;
        for (long c = c0; c < c1; c++)
            for (long r = r0; r < r1; r++)
                dst[c * rows + r] = src[r * cols + c];
    }
}

/* Max-pooling of `planes` rows of `length` values by windows of `k` (stride k, no padding):
 * out (planes, length / k) and, for backward, offset (planes, length / k): where in its window
 * each maximum was (the first, on ties), one byte each instead of the input and 8-byte indices
 * that torch's max-pool keeps. As in torch, a NaN is the maximum (the last NaN of a window). */
/* One row of windows of 3 (the encoder's pools), written so that the compiler vectorises it. */
static void max_pool3_row(
    long bins, const float *restrict row, float *restrict out, uint8_t *restrict offset)
{
    for (long b = 0; b < bins; b++) {
        const float v0 = row[3 * b], v1 = row[3 * b + 1], v2 = row[3 * b + 2];
        const int take1 = v1 > v0 || is_nan(v1);
        const float best = take1 ? v1 : v0;
        const int take2 = v2 > best || is_nan(v2);
        out[b] = take2 ? v2 : best;
        offset[b] = (uint8_t)(take2 ? 2 : take1);
    }
}

void primus_max_pool_forward(
    long planes, long length, long k, const float *x, float *out, uint8_t *offset, int threads)
{
    const long bins = length / k;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < planes; p++) {
        const float *row = x + p * length;
        if (k == 3) {
            max_pool3_row(bins, row, out + p * bins, offset + p * bins);
            continue;
        }
        for (long b = 0; b < bins; b++) {
            float best = row[b * k];
            uint8_t where = 0;
            for (long m = 1; m < k; m++) {
                const float v = row[b * k + m];
                if (v > best || is_nan(v)) {
                    best = v;
                    where = (uint8_t)m;
                }
            }
            out[p * bins + b] = best;
            offset[p * bins + b] = where;
        }
    }
}

/* The input's gradient of primus_max_pool_forward: each window's output gradient at its
 * maximum, zeros elsewhere (and in the tail that no window covers). */
void primus_max_pool_backward(
    long planes, long length, long k, const float *grad_out, const uint8_t *offset,
    float *grad_in, int threads)
{
    const long bins = length / k;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < planes; p++) {
        float *row = grad_in + p * length;
        memset(row, 0, length * sizeof *row);
        for (long b = 0; b < bins; b++)
            row[b * k + offset[p * bins + b]] = grad_out[p * bins + b];
    }
}
