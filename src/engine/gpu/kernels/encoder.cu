// The encoder's element-wise and row-wise steps on the device; cuBLAS does
// the matrix products (engine::gpu::encoder::cuda_ops). Activations are
// float16 (held as unsigned short: no cuda_fp16.h, which NVRTC may lack),
// arithmetic is float32. Plain C apart from the CUDA qualifiers, so that a
// test compiles it for the CPU (kernels/cpu_encoder_harness.cpp).
// Every block-wide reduction assumes blockDim.x is a power of two <= 1024.

#ifndef INF_CPU_HARNESS
__device__ inline float inf_h2f(unsigned short h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}
__device__ inline unsigned short inf_f2h(float f) {
    unsigned short h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
}
#endif

typedef unsigned short half_t;

// Sum over the block of one value per thread (every thread gets the sum).
__device__ inline float inf_block_sum(float v, float *scratch) {
    int t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) scratch[t] += scratch[t + stride];
        __syncthreads();
    }
    float total = scratch[0];
    __syncthreads(); // all have read before the scratch is reused
    return total;
}

__device__ inline float inf_block_max(float v, float *scratch) {
    int t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride && scratch[t + stride] > scratch[t]) scratch[t] = scratch[t + stride];
        __syncthreads();
    }
    float top = scratch[0];
    __syncthreads();
    return top;
}

// One block per row: out[r] = word[ids[r]] + position[positions[r]] + token_type[types[r]].
extern "C" __global__ void embed_sum(const half_t *word, const half_t *position, const half_t *token_type,
                                     const unsigned *ids, const unsigned *positions, const unsigned *types,
                                     int hidden, half_t *out) {
    long long r = blockIdx.x;
    const half_t *w = word + (long long)ids[r] * hidden;
    const half_t *p = position + (long long)positions[r] * hidden;
    const half_t *y = token_type + (long long)types[r] * hidden;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x)
        out[r * hidden + j] = inf_f2h(inf_h2f(w[j]) + inf_h2f(p[j]) + inf_h2f(y[j]));
}

// x[r][j] += bias[j] (bias may be null), then GELU when mode is 1 (erf) or 2
// (tanh approximation).
extern "C" __global__ void bias_act(half_t *x, const half_t *bias, long long rows, int width, int mode) {
    long long n = rows * width;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = inf_h2f(x[i]) + (bias ? inf_h2f(bias[i % width]) : 0.0f);
        if (mode == 1) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        else if (mode == 2) v = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        x[i] = inf_f2h(v);
    }
}

// One block per row: out = LayerNorm(x + residual) * gamma + beta (residual may be null).
extern "C" __global__ void add_layer_norm(const half_t *x, const half_t *residual, const half_t *gamma,
                                          const half_t *beta, int width, float eps, half_t *out) {
    __shared__ float scratch[1024];
    long long base = (long long)blockIdx.x * width;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < width; j += blockDim.x)
        sum += inf_h2f(x[base + j]) + (residual ? inf_h2f(residual[base + j]) : 0.0f);
    float mean = inf_block_sum(sum, scratch) / width;
    float squares = 0.0f;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        float d = inf_h2f(x[base + j]) + (residual ? inf_h2f(residual[base + j]) : 0.0f) - mean;
        squares += d * d;
    }
    float inv = 1.0f / sqrtf(inf_block_sum(squares, scratch) / width + eps);
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        float v = inf_h2f(x[base + j]) + (residual ? inf_h2f(residual[base + j]) : 0.0f);
        out[base + j] = inf_f2h((v - mean) * inv * inf_h2f(gamma[j]) + inf_h2f(beta[j]));
    }
}

// qkv [batch*seq, (heads + 2*kv_heads)*dh] -> q, k, v each [batch, heads, seq, dh]:
// each key/value head serves heads/kv_heads query heads (grouped-query
// attention; kv_heads == heads for BERT). With theta > 0, q and k are
// rotated by their position (rotate-half rotary embedding, position = row
// within the sequence: batches are right-padded).
extern "C" __global__ void split_heads(const half_t *qkv, int batch, int seq, int heads, int kv_heads, int dh,
                                       float theta, half_t *q, half_t *k, half_t *v) {
    long long n = (long long)batch * heads * seq * dh;
    int width = (heads + 2 * kv_heads) * dh;
    int group = heads / kv_heads;
    int half = dh / 2;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int d = (int)(i % dh);
        long long t = (i / dh) % seq, h = (i / ((long long)dh * seq)) % heads, b = i / ((long long)dh * seq * heads);
        const half_t *row = qkv + (b * seq + t) * width;
        int qcol = (int)h * dh, kcol = (heads + (int)h / group) * dh, vcol = kcol + kv_heads * dh;
        v[i] = row[vcol + d];
        if (theta > 0.0f) {
            int j = d < half ? d : d - half;
            float angle = (float)t * exp2f(-(2.0f * j / dh) * log2f(theta));
            float c = cosf(angle), s = sinf(angle);
            int other = d < half ? d + half : d - half;
            float sign = d < half ? -1.0f : 1.0f;
            q[i] = inf_f2h(inf_h2f(row[qcol + d]) * c + sign * inf_h2f(row[qcol + other]) * s);
            k[i] = inf_f2h(inf_h2f(row[kcol + d]) * c + sign * inf_h2f(row[kcol + other]) * s);
        } else {
            q[i] = row[qcol + d];
            k[i] = row[kcol + d];
        }
    }
}

// One block per score row (batch*heads*seq rows of seq floats): softmax over
// the keys of the row's sequence (lengths[b] of them; with causal, only keys
// up to the row's own position), zero for the others.
extern "C" __global__ void masked_softmax(const float *scores, const int *lengths, int heads, int seq, int causal,
                                          half_t *probs) {
    __shared__ float scratch[1024];
    long long row = blockIdx.x;
    int b = (int)(row / ((long long)heads * seq));
    int len = lengths[b];
    int own = (int)(row % seq);
    if (causal && own + 1 < len) len = own + 1;
    const float *s = scores + row * seq;
    float top = -3.0e38f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) top = s[j] > top ? s[j] : top;
    top = inf_block_max(top, scratch);
    float total = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) total += expf(s[j] - top);
    total = inf_block_sum(total, scratch);
    for (int j = threadIdx.x; j < seq; j += blockDim.x)
        probs[row * seq + j] = inf_f2h(j < len ? expf(s[j] - top) / total : 0.0f);
}

// context [batch, heads, seq, dh] -> [batch*seq, heads*dh].
extern "C" __global__ void merge_heads(const half_t *context, int batch, int seq, int heads, int dh, half_t *out) {
    long long n = (long long)batch * heads * seq * dh;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int d = (int)(i % dh);
        long long t = (i / dh) % seq, h = (i / ((long long)dh * seq)) % heads, b = i / ((long long)dh * seq * heads);
        out[(b * seq + t) * heads * dh + h * dh + d] = context[i];
    }
}

// One block per sequence of x [batch*seq, hidden]: mean (mode 0), first (1)
// or last real (2) token's state, L2-normalised, as float32 [batch, hidden].
extern "C" __global__ void pool_normalize(const half_t *x, const int *lengths, int seq, int hidden, int mode,
                                          float *out) {
    __shared__ float scratch[1024];
    long long b = blockIdx.x;
    int len = lengths[b];
    float squares = 0.0f;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        float v;
        if (mode == 0) {
            v = 0.0f;
            for (int t = 0; t < len; t++) v += inf_h2f(x[(b * seq + t) * hidden + j]);
            v /= len;
        } else {
            int t = mode == 1 ? 0 : len - 1;
            v = inf_h2f(x[(b * seq + t) * hidden + j]);
        }
        out[b * hidden + j] = v;
        squares += v * v;
    }
    float norm = sqrtf(inf_block_sum(squares, scratch));
    for (int j = threadIdx.x; j < hidden; j += blockDim.x)
        out[b * hidden + j] = norm > 0.0f ? out[b * hidden + j] / norm : 0.0f;
}

// One block per row: out[r] = table[ids[r]] (a decoder's token embeddings).
extern "C" __global__ void gather_rows(const half_t *table, const unsigned *ids, int width, half_t *out) {
    long long r = blockIdx.x;
    for (int j = threadIdx.x; j < width; j += blockDim.x) out[r * width + j] = table[(long long)ids[r] * width + j];
}

// One block per row: sum = x + add (add may be null), normed = RMSNorm(sum) * weight.
extern "C" __global__ void add_rms_norm(const half_t *x, const half_t *add, const half_t *weight, int width,
                                        float eps, half_t *sum, half_t *normed) {
    __shared__ float scratch[1024];
    long long base = (long long)blockIdx.x * width;
    float squares = 0.0f;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        float v = inf_h2f(x[base + j]) + (add ? inf_h2f(add[base + j]) : 0.0f);
        sum[base + j] = inf_f2h(v);
        squares += v * v;
    }
    float inv = 1.0f / sqrtf(inf_block_sum(squares, scratch) / width + eps);
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        float v = inf_h2f(x[base + j]) + (add ? inf_h2f(add[base + j]) : 0.0f);
        normed[base + j] = inf_f2h(v * inv * inf_h2f(weight[j]));
    }
}

// gate_up [rows, 2*width] (gate, then up) -> out [rows, width] = silu(gate) * up.
extern "C" __global__ void silu_mul(const half_t *gate_up, long long rows, int width, half_t *out) {
    long long n = rows * width;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long r = i / width;
        int j = (int)(i % width);
        float g = inf_h2f(gate_up[r * 2 * width + j]), u = inf_h2f(gate_up[r * 2 * width + width + j]);
        out[i] = inf_f2h(g / (1.0f + expf(-g)) * u);
    }
}
