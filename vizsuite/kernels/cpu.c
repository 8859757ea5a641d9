/* vizsuite's fused CPU kernels (docs/kernels.md): channels-last (NHWC) max pooling and local
 * response normalization, forward and backward, in float32 and bfloat16.
 *
 * Each kernel reads its inputs once and writes its output once; PyTorch runs the same maths as
 * 3-8 passes over the channel maps (int64 pool indices, a zero-filled gradient buffer, an
 * elementwise chain per LRN term). Arithmetic is float32 throughout; bfloat16 is rounded to
 * nearest even only on store. Threads: OpenMP, resolved against torch's own libgomp (it is
 * loaded first), so both share one thread pool.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

static inline float bf2f(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#define LD_f32(p, i) ((p)[i])
#define ST_f32(p, i, v) ((p)[i] = (v))
#define LD_bf16(p, i) bf2f((p)[i])
#define ST_bf16(p, i, v) ((p)[i] = f2bf(v))

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define VEC512 1
/* 16 channels at a time in float32 registers; bf16 in and out bitwise as bf2f / f2bf */
static inline __m512 VLD_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline __m512 VLD_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
static inline void VST_f32(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline void VST_bf16(uint16_t *p, __m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r));
}
#endif

/* ---- 3x3 max pool: any stride, any (asymmetric) -inf padding, first maximum wins ----------
 * x (N,H,W,C) -> y (N,Ho,Wo,C); idx (N,Ho,Wo,C) holds the winner's position kh*3+kw in its
 * window (uint8: 1/8 of torch's int64 indices), NULL when no backward will follow. The window's
 * taps are listed once per output pixel; each 16-channel block keeps its maximum and winner in
 * registers across them.                                                                     */
#ifdef VEC512
#define POOL_FWD_VEC(S)                                                                        \
            for (; c + 16 <= C; c += 16) {                                                     \
                __m512 best = _mm512_set1_ps(-INFINITY);                                       \
                __m128i arg = _mm_setzero_si128();                                             \
                for (int t = 0; t < nk; t++) {                                                 \
                    __m512 v = VLD_##S(tp[t] + c);                                             \
                    __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ)                   \
                                   | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);                   \
                    best = _mm512_mask_mov_ps(best, take, v);                                  \
                    arg = _mm_mask_mov_epi8(arg, take, _mm_set1_epi8((char)tk[t]));            \
                }                                                                              \
                VST_##S(y + o + c, best);                                                      \
                if (idx) _mm_storeu_si128((__m128i *)(idx + o + c), arg);                      \
            }
#define POOL_BWD_VEC(S)                                                                        \
            for (; c + 16 <= C; c += 16) {                                                     \
                __m512 acc = _mm512_setzero_ps();                                              \
                for (int t = 0; t < nw; t++) {                                                 \
                    __m128i id = _mm_loadu_si128((const __m128i *)(idx + wo_[t] + c));         \
                    __mmask16 m = _mm_cmpeq_epi8_mask(id, _mm_set1_epi8((char)wk[t]));         \
                    acc = _mm512_mask_add_ps(acc, m, acc, VLD_##S(gy + wo_[t] + c));           \
                }                                                                              \
                VST_##S(gx + i + c, acc);                                                      \
            }
#define POOL_BWD_VEC_RELU(S)                                                                   \
            for (; c + 16 <= C; c += 16) {                                                     \
                __m512 acc = _mm512_setzero_ps(), vleak = _mm512_set1_ps(leak);                \
                for (int t = 0; t < nw; t++) {                                                 \
                    __m128i id = _mm_loadu_si128((const __m128i *)(idx + wo_[t] + c));         \
                    __mmask16 m = _mm_cmpeq_epi8_mask(id, _mm_set1_epi8((char)wk[t]));         \
                    __m512 v = VLD_##S(gy + wo_[t] + c);                                       \
                    __mmask16 pos = _mm512_cmp_ps_mask(VLD_##S(yo + wo_[t] + c),               \
                                                       _mm512_setzero_ps(), _CMP_GT_OQ);       \
                    v = _mm512_mask_mov_ps(_mm512_mul_ps(v, vleak), pos, v);                   \
                    acc = _mm512_mask_add_ps(acc, m, acc, v);                                  \
                }                                                                              \
                VST_##S(gx + i + c, acc);                                                      \
            }
#else
#define POOL_FWD_VEC(S)
#define POOL_BWD_VEC(S)
#define POOL_BWD_VEC_RELU(S)
#endif

#define MAXPOOL(T, S)                                                                          \
void maxpool3_fwd_##S(const T *x, T *y, uint8_t *idx, int N, int H, int W, int C, int stride,  \
                      int pad_t, int pad_l, int Ho, int Wo, int nt) {                           \
    _Pragma("omp parallel for num_threads(nt) schedule(static)")                               \
    for (long r = 0; r < (long)N * Ho; r++) {                                                  \
        int n = (int)(r / Ho), ho = (int)(r % Ho);                                             \
        for (int wo = 0; wo < Wo; wo++) {                                                      \
            const T *tp[9];                                                                    \
            uint8_t tk[9];                                                                     \
            int nk = 0;                                                                        \
            for (int kh = 0; kh < 3; kh++) {                                                   \
                int h = ho * stride - pad_t + kh;                                              \
                if (h < 0 || h >= H) continue;                                                 \
                for (int kw = 0; kw < 3; kw++) {                                               \
                    int w = wo * stride - pad_l + kw;                                          \
                    if (w < 0 || w >= W) continue;                                             \
                    tp[nk] = x + (((long)n * H + h) * W + w) * C;                              \
                    tk[nk++] = (uint8_t)(kh * 3 + kw);                                         \
                }                                                                              \
            }                                                                                  \
            long o = (((long)n * Ho + ho) * Wo + wo) * C;                                      \
            int c = 0;                                                                         \
            POOL_FWD_VEC(S)                                                                    \
            for (; c < C; c++) {                                                               \
                float best = -INFINITY;                                                        \
                uint8_t arg = 0;                                                               \
                for (int t = 0; t < nk; t++) {                                                 \
                    float v = LD_##S(tp[t], c);                                                \
                    int take = (v > best) | (v != v);                                          \
                    best = take ? v : best;                                                    \
                    arg = take ? tk[t] : arg;                                                  \
                }                                                                              \
                ST_##S(y, o + c, best);                                                        \
                if (idx) idx[o + c] = arg;                                                     \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
/* gx (N,H,W,C): each input gathers the gradients of the windows it won (no zero fill, no    \
 * scatter; every element written once). yo (the pool's output) non-NULL: the input is a ReLU's\
 * output and its rule's gradient (leak where <= 0) is applied here, in the same pass.        */\
void maxpool3_bwd_##S(const T *gy, const uint8_t *idx, const T *yo, float leak, T *gx, int N,  \
                      int H, int W, int C, int stride, int pad_t, int pad_l, int Ho, int Wo,    \
                      int nt) {                                                                 \
    _Pragma("omp parallel for num_threads(nt) schedule(static)")                               \
    for (long r = 0; r < (long)N * H; r++) {                                                   \
        int n = (int)(r / H), h = (int)(r % H);                                                \
        for (int w = 0; w < W; w++) {                                                          \
            long wo_[9];                                                                       \
            uint8_t wk[9];                                                                     \
            int nw = 0;                                                                        \
            for (int kh = 0; kh < 3; kh++) {                                                   \
                int t = h + pad_t - kh;                                                        \
                if (t < 0 || t % stride) continue;                                             \
                int ho = t / stride;                                                           \
                if (ho >= Ho) continue;                                                        \
                for (int kw = 0; kw < 3; kw++) {                                               \
                    int u = w + pad_l - kw;                                                    \
                    if (u < 0 || u % stride) continue;                                         \
                    int wo = u / stride;                                                       \
                    if (wo >= Wo) continue;                                                    \
                    wo_[nw] = (((long)n * Ho + ho) * Wo + wo) * C;                             \
                    wk[nw++] = (uint8_t)(kh * 3 + kw);                                         \
                }                                                                              \
            }                                                                                  \
            long i = (((long)n * H + h) * W + w) * C;                                          \
            int c = 0;                                                                         \
            if (yo) { POOL_BWD_VEC_RELU(S) } else { POOL_BWD_VEC(S) }                          \
            for (; c < C; c++) {                                                               \
                float acc = 0.0f;                                                              \
                for (int t = 0; t < nw; t++) {                                                 \
                    if (idx[wo_[t] + c] != wk[t]) continue;                                    \
                    float v = LD_##S(gy, wo_[t] + c);                                          \
                    if (yo) v = LD_##S(yo, wo_[t] + c) > 0.0f ? v : leak * v;                  \
                    acc += v;                                                                  \
                }                                                                              \
                ST_##S(gx, i + c, acc);                                                        \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}

/* ---- local response norm across channels (torch.nn.LocalResponseNorm's definition) --------
 * y_c = x_c d_c^-beta,  d_c = k + alpha/size * sum_{j = c - size/2}^{c + (size-1)/2} x_j^2
 * One pixel's C channels are contiguous in NHWC; the window sums are `size` shifted adds over
 * the pixel's channels (vectorized across channels, in L1), not a running sum (one long
 * dependency chain).                                                                        */
static inline void lrn_power(const float *d, float *r, int C, float beta) {
    int c = 0;
    if (beta == 0.5f) {
#ifdef __AVX512F__
        /* rsqrt14 + one Newton step: ~23 correct bits, 5x faster than sqrt and divide */
        const __m512 half = _mm512_set1_ps(0.5f), three = _mm512_set1_ps(3.0f);
        for (; c + 16 <= C; c += 16) {
            __m512 v = _mm512_loadu_ps(d + c), y = _mm512_rsqrt14_ps(v);
            y = _mm512_mul_ps(_mm512_mul_ps(half, y),
                              _mm512_fnmadd_ps(_mm512_mul_ps(v, y), y, three));
            _mm512_storeu_ps(r + c, y);
        }
#endif
        for (; c < C; c++) r[c] = 1.0f / sqrtf(d[c]);
    } else {
        for (; c < C; c++) r[c] = powf(d[c], -beta);
    }
}

/* d[c] = k + scale * sum_{j < size} buf[c + j], buf holding the shifted, zero-padded terms */
static inline void window_sum(const float *buf, float *d, int C, int size, float k, float scale) {
    int c = 0;
#ifdef __AVX512F__
    /* 16 channels per register, summed over `size` unaligned loads: no store between terms */
    const __m512 vk = _mm512_set1_ps(k), vs = _mm512_set1_ps(scale);
    for (; c + 64 <= C; c += 64) {     /* four independent sums hide the add latency */
        __m512 a0 = _mm512_loadu_ps(buf + c), a1 = _mm512_loadu_ps(buf + c + 16);
        __m512 a2 = _mm512_loadu_ps(buf + c + 32), a3 = _mm512_loadu_ps(buf + c + 48);
        for (int j = 1; j < size; j++) {
            a0 = _mm512_add_ps(a0, _mm512_loadu_ps(buf + c + j));
            a1 = _mm512_add_ps(a1, _mm512_loadu_ps(buf + c + 16 + j));
            a2 = _mm512_add_ps(a2, _mm512_loadu_ps(buf + c + 32 + j));
            a3 = _mm512_add_ps(a3, _mm512_loadu_ps(buf + c + 48 + j));
        }
        _mm512_storeu_ps(d + c, _mm512_fmadd_ps(vs, a0, vk));
        _mm512_storeu_ps(d + c + 16, _mm512_fmadd_ps(vs, a1, vk));
        _mm512_storeu_ps(d + c + 32, _mm512_fmadd_ps(vs, a2, vk));
        _mm512_storeu_ps(d + c + 48, _mm512_fmadd_ps(vs, a3, vk));
    }
    for (; c + 16 <= C; c += 16) {
        __m512 acc = _mm512_loadu_ps(buf + c);
        for (int j = 1; j < size; j++) acc = _mm512_add_ps(acc, _mm512_loadu_ps(buf + c + j));
        _mm512_storeu_ps(d + c, _mm512_fmadd_ps(vs, acc, vk));
    }
#endif
    for (; c < C; c++) {
        float s = 0.0f;
        for (int j = 0; j < size; j++) s += buf[c + j];
        d[c] = k + scale * s;
    }
}

/* a pixel's C channels as float32 and back (RNE), 16 at a time where AVX-512 is there */
#ifdef VEC512
#define ROW_VEC_LOAD(S) for (; c + 16 <= C; c += 16) _mm512_storeu_ps(o + c, VLD_##S(p + c));
#define ROW_VEC_STORE(S) for (; c + 16 <= C; c += 16) VST_##S(p + c, _mm512_loadu_ps(v + c));
#else
#define ROW_VEC_LOAD(S)
#define ROW_VEC_STORE(S)
#endif
#define ROW_IO(T, S)                                                                           \
static inline void load_row_##S(const T *p, float *o, int C) {                                 \
    int c = 0;                                                                                 \
    ROW_VEC_LOAD(S)                                                                            \
    for (; c < C; c++) o[c] = LD_##S(p, c);                                                    \
}                                                                                              \
static inline void store_row_##S(T *p, const float *v, int C) {                                \
    int c = 0;                                                                                 \
    ROW_VEC_STORE(S)                                                                           \
    for (; c < C; c++) ST_##S(p, c, v[c]);                                                     \
}
ROW_IO(float, f32)
ROW_IO(uint16_t, bf16)

#ifdef VEC512
/* channels c+j of 16 (cur) from registers: [cur, next] shifted by j; c-j from [prev, cur] */
#define ALR(a, b, j) _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b), j))
/* per lane: v summed over channels c - lo .. c + hi (lo, hi <= 8), all in registers (an
 * unaligned reload of values just stored stalls on store forwarding)                        */
static inline __m512 win16(__m512 prev, __m512 cur, __m512 next, int lo, int hi) {
    __m512 s = cur;
    if (hi >= 1) s = _mm512_add_ps(s, ALR(next, cur, 1));
    if (hi >= 2) s = _mm512_add_ps(s, ALR(next, cur, 2));
    if (hi >= 3) s = _mm512_add_ps(s, ALR(next, cur, 3));
    if (hi >= 4) s = _mm512_add_ps(s, ALR(next, cur, 4));
    if (hi >= 5) s = _mm512_add_ps(s, ALR(next, cur, 5));
    if (hi >= 6) s = _mm512_add_ps(s, ALR(next, cur, 6));
    if (hi >= 7) s = _mm512_add_ps(s, ALR(next, cur, 7));
    if (hi >= 8) s = _mm512_add_ps(s, ALR(next, cur, 8));
    if (lo >= 1) s = _mm512_add_ps(s, ALR(cur, prev, 15));
    if (lo >= 2) s = _mm512_add_ps(s, ALR(cur, prev, 14));
    if (lo >= 3) s = _mm512_add_ps(s, ALR(cur, prev, 13));
    if (lo >= 4) s = _mm512_add_ps(s, ALR(cur, prev, 12));
    if (lo >= 5) s = _mm512_add_ps(s, ALR(cur, prev, 11));
    if (lo >= 6) s = _mm512_add_ps(s, ALR(cur, prev, 10));
    if (lo >= 7) s = _mm512_add_ps(s, ALR(cur, prev, 9));
    if (lo >= 8) s = _mm512_add_ps(s, ALR(cur, prev, 8));
    return s;
}
static inline __m512 rsqrt16(__m512 v) {       /* rsqrt14 + one Newton step, as lrn_power */
    __m512 y = _mm512_rsqrt14_ps(v);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), y),
                         _mm512_fnmadd_ps(_mm512_mul_ps(v, y), y, _mm512_set1_ps(3.0f)));
}
/* the register path: beta 1/2 (InceptionV1's), whole 16-channel blocks, windows <= 17 */
#define LRN_REG(C, lo, hi, beta) ((beta) == 0.5f && (C) % 16 == 0 && (lo) <= 8 && (hi) <= 8)
#define LRN_FWD_VEC(T, S)                                                                        \
        if (LRN_REG(C, lo, hi, beta)) {                                                        \
            const T *px = x + p * C;                                                           \
            const __m512 z = _mm512_setzero_ps(), vs = _mm512_set1_ps(scale), vk = _mm512_set1_ps(k); \
            __m512 xc = VLD_##S(px), sp = z, sc = _mm512_mul_ps(xc, xc);                       \
            for (int b = 0; b < C / 16; b++) {                                                 \
                __m512 xn = b + 1 < C / 16 ? VLD_##S(px + 16 * (b + 1)) : z;                   \
                __m512 sn = _mm512_mul_ps(xn, xn);                                             \
                __m512 r = rsqrt16(_mm512_fmadd_ps(vs, win16(sp, sc, sn, lo, hi), vk));        \
                VST_##S(y + p * C + 16 * b, _mm512_mul_ps(xc, r));                             \
                sp = sc; sc = sn; xc = xn;                                                     \
            }                                                                                  \
            continue;                                                                          \
        }
#define LRN_BWD_VEC(T, S)                                                                        \
        if (LRN_REG(C, lo, hi, beta)) {                                                        \
            const T *px = x + p * C, *pg = g + p * C;                                          \
            const __m512 z = _mm512_setzero_ps(), vs = _mm512_set1_ps(scale), vk = _mm512_set1_ps(k); \
            float rr[C], tt[C];                                                                \
            __m512 xc = VLD_##S(px), sp = z, sc = _mm512_mul_ps(xc, xc);                       \
            for (int b = 0; b < C / 16; b++) {                                                 \
                __m512 xn = b + 1 < C / 16 ? VLD_##S(px + 16 * (b + 1)) : z;                   \
                __m512 sn = _mm512_mul_ps(xn, xn);                                             \
                __m512 r = rsqrt16(_mm512_fmadd_ps(vs, win16(sp, sc, sn, lo, hi), vk));        \
                __m512 gxr = _mm512_mul_ps(_mm512_mul_ps(VLD_##S(pg + 16 * b), xc), r);        \
                _mm512_storeu_ps(rr + 16 * b, r);                                              \
                _mm512_storeu_ps(tt + 16 * b, _mm512_mul_ps(gxr, _mm512_mul_ps(r, r)));        \
                sp = sc; sc = sn; xc = xn;                                                     \
            }                                                                                  \
            /* m is in window(i) for i in m - hi .. m + lo: the window mirrored */             \
            __m512 tp = z, tc = _mm512_loadu_ps(tt), vb = _mm512_set1_ps(two_b);               \
            for (int b = 0; b < C / 16; b++) {                                                 \
                __m512 tn = b + 1 < C / 16 ? _mm512_loadu_ps(tt + 16 * (b + 1)) : z;           \
                __m512 u = win16(tp, tc, tn, hi, lo);                                          \
                __m512 xv = VLD_##S(px + 16 * b);                                              \
                __m512 v = _mm512_fnmadd_ps(_mm512_mul_ps(vb, xv), u,                          \
                                            _mm512_mul_ps(VLD_##S(pg + 16 * b), _mm512_loadu_ps(rr + 16 * b))); \
                if (relu) {                                                                    \
                    __mmask16 pos = _mm512_cmp_ps_mask(xv, z, _CMP_GT_OQ);                     \
                    v = _mm512_mask_mov_ps(_mm512_mul_ps(v, _mm512_set1_ps(leak)), pos, v);    \
                }                                                                              \
                VST_##S(gx + p * C + 16 * b, v);                                               \
                tp = tc; tc = tn;                                                              \
            }                                                                                  \
            continue;                                                                          \
        }
#else
#define LRN_FWD_VEC(T, S)
#define LRN_BWD_VEC(T, S)
#endif

/* Each pixel: its channels converted once into float32 rows in L1, all arithmetic on those
 * rows (plain loops the compiler vectorizes), one converted store.                          */
#define LRN(T, S)                                                                              \
void lrn_fwd_##S(const T *x, T *y, long P, int C, int size, float alpha, float beta, float k,  \
                 int nt) {                                                                     \
    const int lo = size / 2, hi = (size - 1) / 2;                                              \
    const float scale = alpha / size;                                                          \
    _Pragma("omp parallel for num_threads(nt) schedule(static)")                               \
    for (long p = 0; p < P; p++) {                                                             \
        LRN_FWD_VEC(T, S)                                                                      \
        float xf[C], sq[C + lo + hi + 1], d[C], r[C];                                          \
        load_row_##S(x + p * C, xf, C);                                                        \
        for (int c = 0; c < lo; c++) sq[c] = 0.0f;                                             \
        for (int c = 0; c < C; c++) sq[lo + c] = xf[c] * xf[c];                                \
        for (int c = 0; c <= hi; c++) sq[lo + C + c] = 0.0f;                                   \
        window_sum(sq, d, C, size, k, scale);          /* window of c: sq[c .. c+lo+hi] */     \
        lrn_power(d, r, C, beta);                                                              \
        for (int c = 0; c < C; c++) d[c] = xf[c] * r[c];                                       \
        store_row_##S(y + p * C, d, C);                                                        \
    }                                                                                          \
}                                                                                              \
/* gx_m = g_m r_m - 2 beta alpha/size x_m sum_{i: m in window(i)} g_i x_i r_i / d_i, r = d^-b \
 * (d recomputed from x: nothing but the input is kept for the backward). relu: x is a ReLU's  \
 * output, whose rule's gradient (leak where x <= 0) is applied on store.                      */\
void lrn_bwd_##S(const T *x, const T *g, T *gx, long P, int C, int size, float alpha,          \
                 float beta, float k, int relu, float leak, int nt) {                          \
    const int lo = size / 2, hi = (size - 1) / 2;                                              \
    const float scale = alpha / size, two_b = 2.0f * beta * scale;                             \
    _Pragma("omp parallel for num_threads(nt) schedule(static)")                               \
    for (long p = 0; p < P; p++) {                                                             \
        LRN_BWD_VEC(T, S)                                                                      \
        float xf[C], gf[C], sq[C + lo + hi + 1], d[C], r[C], t[C + lo + hi + 1], u[C];         \
        load_row_##S(x + p * C, xf, C);                                                        \
        load_row_##S(g + p * C, gf, C);                                                        \
        for (int c = 0; c < lo; c++) sq[c] = 0.0f;                                             \
        for (int c = 0; c < C; c++) sq[lo + c] = xf[c] * xf[c];                                \
        for (int c = 0; c <= hi; c++) sq[lo + C + c] = 0.0f;                                   \
        window_sum(sq, d, C, size, k, scale);                                                  \
        lrn_power(d, r, C, beta);                                                              \
        /* m is in window(i) for i in m-hi .. m+lo: t[m .. m+lo+hi] with t shifted by hi */    \
        for (int c = 0; c < hi; c++) t[c] = 0.0f;                                              \
        if (beta == 0.5f)                                                                      \
            for (int c = 0; c < C; c++) t[hi + c] = gf[c] * xf[c] * (r[c] * r[c] * r[c]);      \
        else                                                                                   \
            for (int c = 0; c < C; c++) t[hi + c] = gf[c] * xf[c] * (r[c] / d[c]);             \
        for (int c = 0; c <= lo; c++) t[hi + C + c] = 0.0f;                                    \
        window_sum(t, u, C, size, 0.0f, 1.0f);                                                 \
        for (int m = 0; m < C; m++) u[m] = gf[m] * r[m] - two_b * xf[m] * u[m];                \
        if (relu)     /* x is a ReLU's output: its rule's gradient in the same pass */         \
            for (int m = 0; m < C; m++) u[m] = xf[m] > 0.0f ? u[m] : leak * u[m];              \
        store_row_##S(gx + p * C, u, C);                                                       \
    }                                                                                          \
}

MAXPOOL(float, f32)
MAXPOOL(uint16_t, bf16)
LRN(float, f32)
LRN(uint16_t, bf16)

int vizsuite_kernels_version(void) { return 1; }

/* ---- ReLU-rule backward from the output: gx = g where y > 0, else leak * g ----------------
 * Rows of C contiguous channels (channels-last), each tensor with its own row stride (a
 * channel slice of a concatenation's gradient is such a view).                               */
#define RELU_BWD(T, S)                                                                         \
void relu_bwd_##S(const T *g, long gs, const T *y, long ys, T *gx, long P, int C, float leak,  \
                  int nt) {                                                                    \
    _Pragma("omp parallel for num_threads(nt) schedule(static)")                               \
    for (long p = 0; p < P; p++) {                                                             \
        const T *pg = g + p * gs, *py = y + p * ys;                                            \
        T *po = gx + p * C;                                                                    \
        for (int c = 0; c < C; c++) {                                                          \
            float v = LD_##S(pg, c);                                                           \
            ST_##S(po, c, LD_##S(py, c) > 0.0f ? v : leak * v);                                \
        }                                                                                      \
    }                                                                                          \
}
RELU_BWD(float, f32)
RELU_BWD(uint16_t, bf16)

/* ---- space to depth with zero padding (a strided stem as a stride-1 conv) ------------------
 * x (N,C,H,W) at any strides -> y (N, Hs/s, Ws/s, s*s*C) contiguous (NHWC of the rearranged
 * input), channel (dy*s + dx)*C + c = a[c] x[n, c, i*s + dy - top, j*s + dx - left] + b[c], 0
 * outside (padding after the affine map: the network's zero padding of its normalized input).
 * a, b NULL: no affine map. Input and output dtypes may differ (a float32 image into a bf16
 * network: the cast is this pass too).                                                      */
#define S2D(TI, SI, TO, SO)                                                                    \
void s2d_fwd_##SI##_##SO(const TI *x, long sn, long sc, long sh, long sw, const float *a,      \
                         const float *b, TO *y, int N, int C, int H, int W, int s, int top,     \
                         int left, int Ho, int Wo, int nt) {                                   \
    const int R = Wo * s * C;                  /* one padded input row, (w, c) order */        \
    const int w1 = W < Wo * s - left ? W : Wo * s - left;   /* input columns kept */           \
    float ar[W * C + 1], br[W * C + 1];        /* the map repeated along a channels-last row */\
    for (int k = 0; k < W * C; k++) { ar[k] = a ? a[k % C] : 1.0f; br[k] = a ? b[k % C] : 0.0f; } \
    _Pragma("omp parallel for num_threads(nt) schedule(static)")                               \
    for (long r = 0; r < (long)N * Ho; r++) {                                                  \
        int n = (int)(r / Ho), i = (int)(r % Ho);                                              \
        TO *po = y + r * (long)Wo * s * s * C;                                                 \
        float t[R];                                                                            \
        TO u[R];                                                                               \
        for (int dy = 0; dy < s; dy++) {                                                       \
            int h = i * s + dy - top;                                                          \
            for (int k = 0; k < R; k++) t[k] = 0.0f;                                           \
            if (h >= 0 && h < H && w1 > 0) {                                                   \
                const TI *px = x + n * sn + (long)h * sh;                                      \
                float *pt = t + left * C;                                                      \
                if (sc == 1 && sw == C) {         /* channels-last: one contiguous run */      \
                    for (int k = 0; k < w1 * C; k++) pt[k] = LD_##SI(px, k) * ar[k] + br[k];   \
                } else {                                                                       \
                    for (int c = 0; c < C; c++)                                                \
                        for (int w = 0; w < w1; w++)                                           \
                            pt[w * C + c] = LD_##SI(px, c * sc + w * sw) * ar[c] + br[c];      \
                }                                                                              \
            }                                                                                  \
            for (int k = 0; k < R; k++) ST_##SO(u, k, t[k]);                                   \
            /* block j's (dx, c) run of this dy: s * C contiguous values each side (a loop:    \
             * memcpy of a run-time 6 elements is a library call each) */                      \
            for (int j = 0; j < Wo; j++) {                                                     \
                TO *d = po + ((long)j * s * s + dy * s) * C;                                   \
                const TO *e = u + (long)j * s * C;                                             \
                for (int k = 0; k < s * C; k++) d[k] = e[k];                                   \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
/* gx (N,C,H,W) at strides sn..: each input takes its one rearranged gradient times a[c] (0   \
 * where cropped)                                                                             */\
void s2d_bwd_##SI##_##SO(const TO *g, TI *gx, long sn, long sc, long sh, long sw, const float *a,\
                         int N, int C, int H, int W, int s, int top, int left, int Ho, int Wo,  \
                         int nt) {                                                             \
    const int R = Wo * s * C;                                                                  \
    const int w1 = W < Wo * s - left ? W : Wo * s - left;                                      \
    float ar[W * C + 1];                                                                       \
    for (int k = 0; k < W * C; k++) ar[k] = a ? a[k % C] : 1.0f;                               \
    _Pragma("omp parallel for num_threads(nt) schedule(static)")                               \
    for (long r = 0; r < (long)N * H; r++) {                                                   \
        int n = (int)(r / H), h = (int)(r % H);                                                \
        int i = (h + top) / s, dy = (h + top) % s;                                             \
        TI *pgx = gx + n * sn + (long)h * sh;                                                  \
        TO u[R];                                                                               \
        float t[R + W * C];                     /* zeros past the kept columns */              \
        for (int k = 0; k < R + W * C; k++) t[k] = 0.0f;                                       \
        if (i < Ho) {                                                                          \
            const TO *pg = g + (((long)n * Ho + i) * Wo * s * s + dy * s) * C;                 \
            for (int j = 0; j < Wo; j++) {                                                     \
                TO *d = u + (long)j * s * C;                                                   \
                const TO *e = pg + (long)j * s * s * C;                                        \
                for (int k = 0; k < s * C; k++) d[k] = e[k];                                   \
            }                                                                                  \
            for (int k = 0; k < R; k++) t[k] = LD_##SO(u, k);                                  \
        }                                                                                      \
        const float *pt = t + left * C;                                                        \
        if (sc == 1 && sw == C) {                                                              \
            for (int k = 0; k < W * C; k++) ST_##SI(pgx, k, k < w1 * C ? pt[k] * ar[k] : 0.0f); \
        } else {                                                                               \
            for (int c = 0; c < C; c++)                                                        \
                for (int w = 0; w < W; w++)                                                    \
                    ST_##SI(pgx, c * sc + w * sw, w < w1 ? pt[w * C + c] * ar[c] : 0.0f);      \
        }                                                                                      \
    }                                                                                          \
}
S2D(float, f32, float, f32)
S2D(float, f32, uint16_t, bf16)
S2D(uint16_t, bf16, uint16_t, bf16)
S2D(uint16_t, bf16, float, f32)

/* ---- bilinear grid_sample's input gradient (zeros padding, align_corners=True) -------------
 * g (N,C,Ho,Wo) at any strides, gx (N,C,H,W) contiguous NCHW float32, grid (N,Ho,Wo,2)
 * contiguous (x, y in [-1, 1]). One image per thread: each scatters into its own gradient (no
 * atomics, and the same order every run), a 128 x 128 x 3 image's gradient staying in L2.    */
void grid_sample_bwd_f32(const float *g, long sn, long sc, long sh, long sw, const float *grid,
                         float *gx, int N, int C, int H, int W, int Ho, int Wo, int nt) {
    _Pragma("omp parallel for num_threads(nt) schedule(static)")
    for (int n = 0; n < N; n++) {
        float *gxn = gx + (long)n * C * H * W;
        memset(gxn, 0, sizeof(float) * (size_t)C * H * W);
        const float *gn = g + (long)n * sn;
        const long plane = (long)H * W;
        for (int ho = 0; ho < Ho; ho++) {
            const float *gr = grid + ((long)n * Ho + ho) * Wo * 2;
            for (int wo = 0; wo < Wo; wo++, gr += 2) {
                float ix = (gr[0] + 1.0f) * 0.5f * (W - 1), iy = (gr[1] + 1.0f) * 0.5f * (H - 1);
                float fx = floorf(ix), fy = floorf(iy);
                int x0 = (int)fx, y0 = (int)fy, x1 = x0 + 1, y1 = y0 + 1;
                float wx1 = ix - fx, wx0 = 1.0f - wx1, wy1 = iy - fy, wy0 = 1.0f - wy1;
                int in00 = x0 >= 0 && x0 < W && y0 >= 0 && y0 < H, in01 = x1 >= 0 && x1 < W && y0 >= 0 && y0 < H;
                int in10 = x0 >= 0 && x0 < W && y1 >= 0 && y1 < H, in11 = x1 >= 0 && x1 < W && y1 >= 0 && y1 < H;
                const float *pg = gn + (long)ho * sh + (long)wo * sw;
                for (int c = 0; c < C; c++) {
                    float v = pg[c * sc];
                    float *p = gxn + c * plane;
                    if (in00) p[(long)y0 * W + x0] += wx0 * wy0 * v;
                    if (in01) p[(long)y0 * W + x1] += wx1 * wy0 * v;
                    if (in10) p[(long)y1 * W + x0] += wx0 * wy1 * v;
                    if (in11) p[(long)y1 * W + x1] += wx1 * wy1 * v;
                }
            }
        }
    }
}
