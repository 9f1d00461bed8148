// Runs encoder.cu on the CPU for the tests (engine::gpu::encoder::kernels):
// built as a shared library, each kernel behind an extern "C" run_<name>
// that launches it block after block, each CUDA thread a pthread,
// __syncthreads a barrier, __shared__ a static the block's threads share.
// float16 conversions through GCC's _Float16 (IEEE, round to nearest even,
// as cvt.rn.f16.f32 does).
#define INF_CPU_HARNESS
#include <math.h>
#include <string.h>
#include "cpu_shim.h"

static inline float inf_h2f(unsigned short h) {
    _Float16 v;
    memcpy(&v, &h, 2);
    return (float)v;
}
static inline unsigned short inf_f2h(float f) {
    _Float16 v = (_Float16)f;
    unsigned short h;
    memcpy(&h, &v, 2);
    return h;
}

#include "encoder.cu"

template <class F> struct Job { F *kernel; unsigned t; };

template <class F> static void *run_thread(void *p) {
    Job<F> *job = (Job<F> *)p;
    threadIdx = {job->t, 0, 0};
    (*job->kernel)();
    return 0;
}

template <class F> static void launch(unsigned grid, unsigned threads, F kernel) {
    gridDim = {grid, 1, 1};
    blockDim = {threads, 1, 1};
    for (unsigned x = 0; x < grid; x++) {
        blockIdx = {x, 0, 0};
        pthread_barrier_init(&block_barrier, 0, threads);
        std::vector<pthread_t> handles(threads);
        std::vector<Job<F>> jobs(threads);
        for (unsigned t = 0; t < threads; t++) {
            jobs[t] = {&kernel, t};
            pthread_create(&handles[t], 0, run_thread<F>, &jobs[t]);
        }
        for (unsigned t = 0; t < threads; t++) pthread_join(handles[t], 0);
        pthread_barrier_destroy(&block_barrier);
    }
}

extern "C" {
void run_embed_sum(unsigned grid, unsigned threads, const half_t *word, const half_t *position,
                   const half_t *token_type, const unsigned *ids, const unsigned *positions, const unsigned *types,
                   int hidden, half_t *out) {
    launch(grid, threads, [&] { embed_sum(word, position, token_type, ids, positions, types, hidden, out); });
}
void run_bias_act(unsigned grid, unsigned threads, half_t *x, const half_t *bias, long long rows, int width, int mode) {
    launch(grid, threads, [&] { bias_act(x, bias, rows, width, mode); });
}
void run_add_layer_norm(unsigned grid, unsigned threads, const half_t *x, const half_t *residual,
                        const half_t *gamma, const half_t *beta, int width, float eps, half_t *out) {
    launch(grid, threads, [&] { add_layer_norm(x, residual, gamma, beta, width, eps, out); });
}
void run_split_heads(unsigned grid, unsigned threads, const half_t *qkv, int batch, int seq, int heads,
                     int kv_heads, int dh, float theta, half_t *q, half_t *k, half_t *v) {
    launch(grid, threads, [&] { split_heads(qkv, batch, seq, heads, kv_heads, dh, theta, q, k, v); });
}
void run_masked_softmax(unsigned grid, unsigned threads, const float *scores, const int *lengths, int heads, int seq,
                        int causal, half_t *probs) {
    launch(grid, threads, [&] { masked_softmax(scores, lengths, heads, seq, causal, probs); });
}
void run_gather_rows(unsigned grid, unsigned threads, const half_t *table, const unsigned *ids, int width,
                     half_t *out) {
    launch(grid, threads, [&] { gather_rows(table, ids, width, out); });
}
void run_add_rms_norm(unsigned grid, unsigned threads, const half_t *x, const half_t *add, const half_t *weight,
                      int width, float eps, half_t *sum, half_t *normed) {
    launch(grid, threads, [&] { add_rms_norm(x, add, weight, width, eps, sum, normed); });
}
void run_silu_mul(unsigned grid, unsigned threads, const half_t *gate_up, long long rows, int width, half_t *out) {
    launch(grid, threads, [&] { silu_mul(gate_up, rows, width, out); });
}
void run_merge_heads(unsigned grid, unsigned threads, const half_t *context, int batch, int seq, int heads, int dh,
                     half_t *out) {
    launch(grid, threads, [&] { merge_heads(context, batch, seq, heads, dh, out); });
}
void run_pool_normalize(unsigned grid, unsigned threads, const half_t *x, const int *lengths, int seq, int hidden,
                        int mode, float *out) {
    launch(grid, threads, [&] { pool_normalize(x, lengths, seq, hidden, mode, out); });
}
}
