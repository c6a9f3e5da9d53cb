/* The C prelude of every kernel the C backend renders (codegen/render_c.py PRELUDE): half-precision
   conversions, sum blocks, streaming stores, float32 math with one source for every vector width,
   torch's division and remainder rules. Pasted in front of each kernel's source, so its text is part
   of the compile cache's key. */
#include <stdint.h>
#include <string.h>
#include <math.h>
typedef uint16_t bf16_t;
static inline float bf16_to_f32(bf16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline bf16_t f32_to_bf16(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  return f != f ? (bf16_t)0x7fc0 : (bf16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }
/* float16 <-> float32 with integer operations, which gcc vectorizes (it vectorizes no _Float16
   conversion without AVX512-FP16: the bench's float16 layer norm over 4096x4096 took 28.4 ms
   through _Float16, 0.61x torch eager, and 9.9 ms now, 1.98x). Round to nearest even; overflow to
   inf; NaN stays NaN. */
typedef uint16_t f16_t;
static inline float f16_to_f32(f16_t h) {
  /* the 15 exponent-and-mantissa bits moved to a float's bit positions, scaled by 2^(127-15):
     exact for normal and subnormal halves; inf and NaN get an all-ones exponent */
  const uint32_t em = (uint32_t)h & 0x7fffu, shifted = em << 13;
  float f; memcpy(&f, &shifted, 4);
  f *= 0x1p112f;
  uint32_t u; memcpy(&u, &f, 4);
  u = (em >= 0x7c00u ? (shifted | 0x7f800000u) : u) | ((uint32_t)h & 0x8000u) << 16;
  memcpy(&f, &u, 4);
  return f;
}
static inline f16_t f32_to_f16(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  /* normal results: rebias the exponent (-112 << 23) and round at bit 13, ties to even */
  const uint32_t normal = (u + 0xc8000fffu + ((u >> 13) & 1u)) >> 13;
  /* below 2^-14: adding 0.5 rounds to a multiple of 2^-24, the float16 subnormal step */
  float a; memcpy(&a, &u, 4);
  a += 0.5f;
  uint32_t sub; memcpy(&sub, &a, 4);
  uint32_t r = u < 0x38800000u ? sub - 0x3f000000u : normal;
  r = u >= 0x47800000u ? 0x7c00u : r; /* 2^16 and up, and inf */
  r = u > 0x7f800000u ? 0x7e00u : r; /* NaN */
  return (f16_t)(r | sign);
}
/* f rounded to the nearest float16, as a float (a cast to float16 inside a kernel), in float
   arithmetic: adding c = +-2^(e + 13), e the exponent of f (at least float16's -14), leaves f's
   bits below float16's last place out of the sum, rounded to nearest even; subtracting c again is
   exact. Half the operations of the round trip through f16_t. */
static inline float round_f16(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  uint32_t e = u & 0x7f800000u;
  e = e < 0x38800000u ? 0x38800000u : e;
  const uint32_t cb = (e + (13u << 23)) | (u & 0x80000000u);
  float c; memcpy(&c, &cb, 4);
  const float r = (f + c) - c; /* NaN stays NaN; inf is replaced below */
  return copysignf(fabsf(f) >= 65520.0f ? INFINITY : fabsf(r), f);
}
/* float sums: SUM_LANE (render_c.py) elements per vector lane in float, then into a double */
#if defined(__AVX512F__)
#define LZ_SUM_BLOCK 1024
#elif defined(__AVX__)
#define LZ_SUM_BLOCK 512
#else
#define LZ_SUM_BLOCK 256
#endif
/* copy `bytes` from an L1 scratch block to memory with non-temporal (cache-bypassing) stores
   where the target is aligned; the unaligned head and tail take plain stores. Compiler builtins,
   not <immintrin.h>: that header alone adds 0.2 s to every kernel's compile. */
#if defined(__AVX512F__)
#define LZ_NT_W 64
#elif defined(__AVX__)
#define LZ_NT_W 32
#elif defined(__SSE2__)
#define LZ_NT_W 16
#else
#define LZ_NT_W 0
#endif
#if LZ_NT_W
typedef float lz_ntv __attribute__((vector_size(LZ_NT_W)));
#endif
static inline void lz_stream(void* restrict dst, const void* restrict src, int64_t bytes) {
  char* d = (char*)dst; const char* s = (const char*)src;
#if LZ_NT_W
  int64_t head = (int64_t)((LZ_NT_W - ((uintptr_t)d & (LZ_NT_W - 1))) & (LZ_NT_W - 1));
  if (head > bytes) head = bytes;
  memcpy(d, s, head); d += head; s += head; bytes -= head;
  for (; bytes >= LZ_NT_W; bytes -= LZ_NT_W, d += LZ_NT_W, s += LZ_NT_W) {
    lz_ntv v; memcpy(&v, s, LZ_NT_W);
#if defined(__clang__)
    __builtin_nontemporal_store(v, (lz_ntv*)d);
#elif LZ_NT_W == 64
    __builtin_ia32_movntps512((float*)d, v);
#elif LZ_NT_W == 32
    __builtin_ia32_movntps256((float*)d, v);
#else
    __builtin_ia32_movntps((float*)d, v);
#endif
  }
#endif
  memcpy(d, s, bytes);
}
/* float16 outputs leave an L1 block of floats (render_c's `blocks`): narrowed as they are copied
   out. With F16C, vcvtps2ph narrows 8 at a time (round to nearest even, overflow to inf, NaN stays
   NaN); the bit operations of f32_to_f16 took a third of a float16 layer norm's time on AVX2 */
static inline void lz_copy_f16(void* restrict dst, const float* restrict src, int64_t n) {
  f16_t* d = (f16_t*)dst;
  int64_t j = 0;
#if defined(__F16C__) && defined(__GNUC__) && !defined(__clang__)
  typedef float lz_v8f32 __attribute__((vector_size(32)));
  typedef short lz_v8i16 __attribute__((vector_size(16)));
  for (; j + 8 <= n; j += 8) {
    lz_v8f32 v; memcpy(&v, src + j, 32);
    const lz_v8i16 r = __builtin_ia32_vcvtps2ph256(v, 0);
    memcpy(d + j, &r, 16);
  }
#endif
  #pragma omp simd
  for (int64_t t = j; t < n; t++) d[t] = f32_to_f16(src[t]);
}
/* the same, streamed: through an L1 block of halves and lz_stream */
static inline void lz_stream_f16(void* restrict dst, const float* restrict src, int64_t n) {
  for (int64_t i = 0; i < n; i += 1024) {
    const int64_t m = n - i < 1024 ? n - i : 1024;
    f16_t h[1024] __attribute__((aligned(64)));
    lz_copy_f16(h, src + i, m);
    lz_stream((f16_t*)dst + i, h, m * (int64_t)sizeof(f16_t));
  }
}
/* non-temporal stores are weakly ordered: fence them before another thread may read */
static inline void lz_stream_fence(void) {
#if LZ_NT_W
  __builtin_ia32_sfence();
#endif
}
/* float32 exp, log, tanh and erf: one source for every vector width and for scalar code, so a
   value is the same bits wherever it is computed: in a 16-lane loop body, its 8-lane epilogue, its
   scalar tail, or another kernel (glibc's libmvec has a different algorithm per width, and its
   scalar expf another still: a tensor of equal values came out of `log` with two different results,
   and an argmin of ties picked the wrong one). Plain arithmetic and bit operations, inlined into the
   loops, so gcc vectorizes them at any width. Against the function in double, on a sweep of every
   997th float32 bit pattern (tests/test_math_c.py; fused multiply-adds where the CPU has them):
   exp 0.975 ulp at most, log 0.755, tanh 1.248, erf 0.801. exp: Cody-Waite reduction
   x = n ln2 + r, a degree-7 polynomial for e^r, 2^n as two exponent-field scalings (so subnormal
   results round once and e^88.72 does not overflow); log: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
   log(1 + f) as f - f^2/2 + f^3 P(f) (Cephes' coefficients), e ln2 in two parts; tanh: an odd
   polynomial below 0.625 (Cephes'), 1 - 2 / (e^2|x| + 1) above; erf: x + x P(x^2) below 0.875,
   1 - e^-x^2 g(x) up to 4 (g fitted to erfc(x) e^x^2 on [0.875, 2] and [2, 4]), 1 above.
   sin, cos and pow, and every float64 function, are glibc's scalar ones: consistent, unvectorized. */
static inline float lz_fbits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t lz_bitsf(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
#if defined(__FMA__)
#define LZ_MAD(a, b, c) __builtin_fmaf(a, b, c)
#else
#define LZ_MAD(a, b, c) ((a) * (b) + (c))
#endif
static inline float lz_expf(float x) {
  float c = x < 88.8f ? x : 88.8f;
  c = c > -104.0f ? c : -104.0f;
  const float n = __builtin_rintf(c * 1.44269504088896341f);
  float r = LZ_MAD(-n, 0.693145751953125f, c);
  r = LZ_MAD(-n, 1.428606765330187045e-06f, r);
  float p = 1.9875691500E-4f;
  p = LZ_MAD(p, r, 1.3981999507E-3f);
  p = LZ_MAD(p, r, 8.3334519073E-3f);
  p = LZ_MAD(p, r, 4.1665795894E-2f);
  p = LZ_MAD(p, r, 1.6666665459E-1f);
  p = LZ_MAD(p, r, 5.0000001201E-1f);
  p = LZ_MAD(p, r * r, r) + 1.0f;
  const int32_t k = (int32_t)n, k1 = k >> 1, k2 = k - k1;
  const float y = p * lz_fbits((uint32_t)(k1 + 127) << 23) * lz_fbits((uint32_t)(k2 + 127) << 23);
  return x != x ? x : y;
}
static inline float lz_logf(float x) {
  const int sub = x < 1.17549435e-38f;
  const uint32_t ix = lz_bitsf(sub ? x * 8388608.0f : x);
  int32_t e = (int32_t)(ix >> 23) - (sub ? 150 : 127);
  float m = lz_fbits((ix & 0x007fffffu) | 0x3f800000u);
  const int big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e += big;
  const float f = m - 1.0f, z = f * f, fe = (float)e;
  float y = 7.0376836292E-2f;
  y = LZ_MAD(y, f, -1.1514610310E-1f);
  y = LZ_MAD(y, f, 1.1676998740E-1f);
  y = LZ_MAD(y, f, -1.2420140846E-1f);
  y = LZ_MAD(y, f, 1.4249322787E-1f);
  y = LZ_MAD(y, f, -1.6668057665E-1f);
  y = LZ_MAD(y, f, 2.0000714765E-1f);
  y = LZ_MAD(y, f, -2.4999993993E-1f);
  y = LZ_MAD(y, f, 3.3333331174E-1f);
  y = y * f * z;
  y = LZ_MAD(fe, -2.12194440e-4f, y);
  y = LZ_MAD(-0.5f, z, y);
  const float r = LZ_MAD(fe, 0.693359375f, f + y);
  /* inf -> inf, 0 -> -inf, negative -> NaN, NaN -> itself; as selects of one type (an `&&`
     here kept gcc from vectorizing a clamp to (0, 1] followed by log) */
  float s = x == INFINITY ? x : r;
  s = x == 0.0f ? -INFINITY : s;
  s = x < 0.0f ? NAN : s;
  return x != x ? x : s;
}
static inline float lz_tanhf(float x) {
  const float a = __builtin_fabsf(x), z = x * x;
  const float e = lz_expf(2.0f * a);
  const float big = __builtin_copysignf(1.0f - 2.0f / (e + 1.0f), x);
  float p = -5.70498872745E-3f;
  p = LZ_MAD(p, z, 2.06390887954E-2f);
  p = LZ_MAD(p, z, -5.37397155531E-2f);
  p = LZ_MAD(p, z, 1.33314422036E-1f);
  p = LZ_MAD(p, z, -3.33332819422E-1f);
  return a < 0.625f ? LZ_MAD(p * z, x, x) : big;
}
static inline float lz_erff(float x) {
  const float a = __builtin_fabsf(x), z = x * x;
  float p = 8.554767555324361e-05f;
  p = LZ_MAD(p, z, -0.0008181033772416413f);
  p = LZ_MAD(p, z, 0.005203865002840757f);
  p = LZ_MAD(p, z, -0.026860259473323822f);
  p = LZ_MAD(p, z, 0.11283703148365021f);
  p = LZ_MAD(p, z, -0.37612631916999817f);
  p = LZ_MAD(p, z, 0.12837916612625122f);
  const float small = LZ_MAD(x, p, x);
  const int hi = a >= 2.0f;
  const float t = a - (hi ? 3.0f : 1.4375f);
  float g = hi ? -1.3815749753121054e-06f : -9.397936810273677e-05f;
  g = LZ_MAD(g, t, hi ? 5.9298840824340004e-06f : 0.00029180292040109634f);
  g = LZ_MAD(g, t, hi ? -2.0899575247312896e-05f : -0.0007837607990950346f);
  g = LZ_MAD(g, t, hi ? 8.285520016215742e-05f : 0.002195216016843915f);
  g = LZ_MAD(g, t, hi ? -0.0003241304657422006f : -0.005910684820264578f);
  g = LZ_MAD(g, t, hi ? 0.0012232892913743854f : 0.01510260533541441f);
  g = LZ_MAD(g, t, hi ? -0.004479438532143831f : -0.03648584708571434f);
  g = LZ_MAD(g, t, hi ? 0.015884339809417725f : 0.08265209943056107f);
  g = LZ_MAD(g, t, hi ? -0.054372258484363556f : -0.17354117333889008f);
  g = LZ_MAD(g, t, hi ? 0.17900115251541138f : 0.33211755752563477f);
  const float large = a < 4.0f ? 1.0f - lz_expf(-z) * g : 1.0f;
  return a < 0.875f ? small : x != x ? x : __builtin_copysignf(large, x);
}
/* torch's floor division and remainder (c10 div_floor_floating / remainder) */
#define FLOAT_DIVMOD(T, SFX) \
static inline T floordiv_##SFX(T a, T b) { \
  if (b == 0) return a / b; \
  T mod = fmod##SFX(a, b); T div = (a - mod) / b; \
  if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1; \
  if (div != 0) { T fl = floor##SFX(div); if (div - fl > (T)0.5) fl += 1; return fl; } \
  return copysign##SFX((T)0, a / b); } \
static inline T mod_##SFX(T a, T b) { \
  T m = fmod##SFX(a, b); return (m != 0 && ((b < 0) != (m < 0))) ? m + b : m; }
FLOAT_DIVMOD(float, f)
FLOAT_DIVMOD(double, )
/* integers wrap around like torch's (two's complement): arithmetic that may overflow runs on the
   unsigned type (signed overflow is undefined in C, and gcc folds `x + 1 > x` to true). Division
   never divides by 0 or -1 (the hardware traps on INT_MIN / -1, and gcc, which may take a / -1 for
   -a, would not keep a test for -1 in front of the division): by -1 it negates, wrapping, and by 0
   it gives 0 */
#define INT_DIVMOD(T, U) \
static inline T floordiv_##T(T a, T b) { \
  const T d = (b == 0 || b == -1) ? 1 : b, q = a / d, r = a % d; \
  return b == 0 ? 0 : b == -1 ? (T)(0u - (U)a) : (r != 0 && ((r < 0) != (d < 0))) ? q - 1 : q; } \
static inline T mod_##T(T a, T b) { \
  const T d = (b == 0 || b == -1) ? 1 : b, r = a % d; \
  return (b == 0 || b == -1) ? 0 : (r != 0 && ((r < 0) != (d < 0))) ? r + d : r; } \
static inline T div_##T(T a, T b) { \
  const T d = (b == 0 || b == -1) ? 1 : b, q = a / d; return b == 0 ? 0 : b == -1 ? (T)(0u - (U)a) : q; } \
static inline T pow_##T(T a, T b) { \
  U r = 1, m = (U)a; if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0); \
  while (b) { if (b & 1) r *= m; m *= m; b >>= 1; } return (T)r; }
INT_DIVMOD(int32_t, uint32_t)
INT_DIVMOD(int64_t, uint64_t)
